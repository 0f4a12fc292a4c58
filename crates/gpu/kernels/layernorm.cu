// LayerNorm over the last axis (eps 1e-5), forward and backward side by side.
//
// forward:  out = (x - mean) * rstd * w + b; mean, rstd (N) f32 saved for the backward.
// backward: dinp (N,C) = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout*w,
//           written (accumulate = 0) or added (accumulate = 1); dw, db: see col_partials.
// One warp per row.

extern "C" __global__ void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp,
                                             const floatX* w, const floatX* b, int N, int C) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += to_f(x[c]);
    const float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float d = to_f(x[c]) - m;
        v += d * d;
    }
    const float r = rsqrtf(warp_sum(v) / C + 1e-5f);
    floatX* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = from_f((to_f(x[c]) - m) * r * to_f(w[c]) + to_f(b[c]));
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
    float a = 0.0f, bsum = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float dxhat = to_f(dy[c]) * to_f(w[c]);
        a += dxhat;
        bsum += dxhat * (to_f(x[c]) - m) * r;
    }
    a = warp_sum(a) / C;
    bsum = warp_sum(bsum) / C;
    floatX* dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        const float xhat = (to_f(x[c]) - m) * r;
        float g = r * (to_f(dy[c]) * to_f(w[c]) - a - xhat * bsum);
        if (accumulate) g += to_f(dx[c]);
        dx[c] = from_f(g);
    }
}

// Column sums for the parameter gradients of a bias and of a LayerNorm, without atomics:
// block (x, y) sums rows [y*rows_per, (y+1)*rows_per) of columns x*256.. into
//   part[y*C + c]          = Σ dout[n,c]                     (db)
//   part[(P + y)*C + c]    = Σ dout[n,c] * xhat[n,c]         (dw, only when inp != 0)
// with P = gridDim.y; reduce_partials then adds the P partials, in order, into the gradient.
extern "C" __global__ void col_partials(float* part, const floatX* dout, const floatX* inp,
                                        const float* mean, const float* rstd, int N, int C, int rows_per) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int P = gridDim.y, y = blockIdx.y;
    const int n0 = y * rows_per, n1 = min(N, n0 + rows_per);
    float db = 0.0f, dw = 0.0f;
    for (int n = n0; n < n1; n++) {
        const float g = to_f(dout[(size_t)n * C + c]);
        db += g;
        if (inp) dw += g * (to_f(inp[(size_t)n * C + c]) - mean[n]) * rstd[n];
    }
    part[(size_t)y * C + c] = db;
    if (inp) part[(size_t)(P + y) * C + c] = dw;
}

// dst[c] += Σ_{y<P} part[y*C + c] (in order of y).
extern "C" __global__ void reduce_partials(float* dst, const float* part, int P, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int y = 0; y < P; y++) s += part[(size_t)y * C + c];
    dst[c] += s;
}
