// LayerNorm (GPT-2) and RMSNorm (Llama) over the last axis, forward and backward side by side.
//
// LayerNorm (eps 1e-5):
// forward:  out = (x - mean) * rstd * w + b; mean, rstd (N) f32 saved for the backward.
// backward: dinp (N,C) = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout*w,
//           written (accumulate = 0) or added (accumulate = 1); dw, db: see col_partials.
// RMSNorm (eps from the config), n = x * rstd, rstd = 1/sqrt(mean(x^2) + eps):
// forward:  out = n * w; rstd (N) f32 saved.
// backward: dinp = rstd * (dn - n * mean(dn * n)), dn = dout*w, written or added as above;
//           dw: col_partials with no mean (xhat = x * rstd).
// One warp per row, 16-byte vectors (C a multiple of VEC); statistics in f32 (LayerNorm: two
// passes over the row for the variance, which the cache serves).

extern "C" __global__ void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp,
                                             const floatX* w, const floatX* b, int N, int C) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    float v[VEC];
    float s = 0.0f;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(v, x + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) s += v[k];
    }
    const float m = warp_sum(s) / C;
    float var = 0.0f;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(v, x + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) var += (v[k] - m) * (v[k] - m);
    }
    const float r = rsqrtf(warp_sum(var) / C + 1e-5f);
    floatX* o = out + (size_t)row * C;
    float wv[VEC], bv[VEC];
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(v, x + c);
        ld_vec(wv, w + c);
        ld_vec(bv, b + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) v[k] = (v[k] - m) * r * wv[k] + bv[k];
        st_vec(o + c, v);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

extern "C" __global__ void layernorm_backward(floatX* dinp, const floatX* dout, const floatX* inp,
                                              const floatX* w, const float* mean, const float* rstd,
                                              int N, int C, int accumulate) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    const floatX* dy = dout + (size_t)row * C;
    const float m = mean[row], r = rstd[row];
    float xv[VEC], gv[VEC], wv[VEC];
    float a = 0.0f, bsum = 0.0f;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(xv, x + c);
        ld_vec(gv, dy + c);
        ld_vec(wv, w + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float dxhat = gv[k] * wv[k];
            a += dxhat;
            bsum += dxhat * (xv[k] - m) * r;
        }
    }
    a = warp_sum(a) / C;
    bsum = warp_sum(bsum) / C;
    floatX* dx = dinp + (size_t)row * C;
    float dv[VEC];
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(xv, x + c);
        ld_vec(gv, dy + c);
        ld_vec(wv, w + c);
        if (accumulate) ld_vec(dv, dx + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float g = r * (gv[k] * wv[k] - a - (xv[k] - m) * r * bsum);
            dv[k] = accumulate ? dv[k] + g : g;
        }
        st_vec(dx + c, dv);
    }
}

// Column sums for the parameter gradients of a bias and of a LayerNorm or RMSNorm, without
// atomics: block (x, y) sums rows [y*rows_per, (y+1)*rows_per) of VEC columns per thread into
//   part[y*C + c]          = Σ dout[n,c]                     (db)
//   part[(P + y)*C + c]    = Σ dout[n,c] * xhat[n,c]         (dw, only when inp != 0)
// with P = gridDim.y and xhat = (x - mean) * rstd (mean = 0 when `mean` is null: RMSNorm);
// reduce_partials then adds the P partials, in order, into the gradient.
extern "C" __global__ void col_partials(float* part, const floatX* dout, const floatX* inp,
                                        const float* mean, const float* rstd, int N, int C, int rows_per) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (c >= C) return;
    const int P = gridDim.y, y = blockIdx.y;
    const int n0 = y * rows_per, n1 = min(N, n0 + rows_per);
    float db[VEC] = {}, dw[VEC] = {}, g[VEC], x[VEC];
    for (int n = n0; n < n1; n++) {
        ld_vec(g, dout + (size_t)n * C + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) db[k] += g[k];
        if (inp) {
            ld_vec(x, inp + (size_t)n * C + c);
            const float m = mean ? mean[n] : 0.0f, r = rstd[n];
#pragma unroll
            for (int k = 0; k < VEC; k++) dw[k] += g[k] * (x[k] - m) * r;
        }
    }
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        part[(size_t)y * C + c + k] = db[k];
        if (inp) part[(size_t)(P + y) * C + c + k] = dw[k];
    }
}

// dst[c] += Σ_{y<P} part[y*C + c]: one warp per column, lane l sums y = l, l+32, ... in order,
// then a fixed shuffle tree (deterministic).
extern "C" __global__ void reduce_partials(float* dst, const float* part, int P, int C) {
    const int c = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (c >= C) return;
    float s = 0.0f;
    for (int y = lane; y < P; y += 32) s += part[(size_t)y * C + c];
    s = warp_sum(s);
    if (lane == 0) dst[c] += s;
}

extern "C" __global__ void rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N,
                                           int C, float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    float v[VEC], wv[VEC];
    float s = 0.0f;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(v, x + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) s += v[k] * v[k];
    }
    const float r = rsqrtf(warp_sum(s) / C + eps);
    floatX* o = out + (size_t)row * C;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(v, x + c);
        ld_vec(wv, w + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) v[k] = v[k] * r * wv[k];
        st_vec(o + c, v);
    }
    if (lane == 0) rstd[row] = r;
}

extern "C" __global__ void rmsnorm_backward(floatX* dinp, const floatX* dout, const floatX* inp, const floatX* w,
                                            const float* rstd, int N, int C, int accumulate) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    const floatX* dy = dout + (size_t)row * C;
    const float r = rstd[row];
    float xv[VEC], gv[VEC], wv[VEC];
    float a = 0.0f;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(xv, x + c);
        ld_vec(gv, dy + c);
        ld_vec(wv, w + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) a += gv[k] * wv[k] * xv[k] * r;
    }
    a = warp_sum(a) / C;  // mean(dn * n)
    floatX* dx = dinp + (size_t)row * C;
    float dv[VEC];
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        ld_vec(xv, x + c);
        ld_vec(gv, dy + c);
        ld_vec(wv, w + c);
        if (accumulate) ld_vec(dv, dx + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float g = r * (gv[k] * wv[k] - xv[k] * r * a);
            dv[k] = accumulate ? dv[k] + g : g;
        }
        st_vec(dx + c, dv);
    }
}
