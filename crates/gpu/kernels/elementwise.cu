// Elementwise layers, forward and backward side by side: bias, GELU (tanh approximation) with
// the MLP bias fused, SwiGLU, residual add with the projection bias (if any) and the
// residual-branch dropout fused, and the dtype conversion. 16-byte vector loads (VEC
// elements) throughout.

// out (N,OC) += bias (OC). 2-D launch (FOR_ROWS).
extern "C" __global__ void add_bias(floatX* out, const floatX* bias, int N, int OC) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (c >= OC) return;
    float bv[VEC], x[VEC];
    ld_vec(bv, bias + c);
    FOR_ROWS(r, N) {
        floatX* o = out + (size_t)r * OC + c;
        ld_vec(x, o);
#pragma unroll
        for (int k = 0; k < VEC; k++) x[k] += bv[k];
        st_vec(o, x);
    }
}

#define GELU_K 0.7978845608028654f  // sqrt(2/pi)

__device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
}

// The MLP's first activation, bias fused: pre (N,OC) += bias; post = gelu(pre), with
// gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3))) of pre as stored (rounded to floatX), so
// that gelu_forward recomputing post from pre (--recompute) gives the same bits. 2-D launch.
extern "C" __global__ void bias_gelu_forward(floatX* pre, floatX* post, const floatX* bias, int N, int OC) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (c >= OC) return;
    float bv[VEC], x[VEC], y[VEC];
    ld_vec(bv, bias + c);
    FOR_ROWS(r, N) {
        const size_t i = (size_t)r * OC + c;
        ld_vec(x, pre + i);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            x[k] = to_f(from_f(x[k] + bv[k]));
            y[k] = gelu(x[k]);
        }
        st_vec(pre + i, x);
        st_vec(post + i, y);
    }
}

// post = gelu(pre) (n a multiple of VEC): the activation recomputed in the backward pass.
extern "C" __global__ void gelu_forward(floatX* post, const floatX* pre, size_t n) {
    FOR_EACH(v, n / VEC) {
        float x[VEC];
        ld_vec(x, pre + v * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) x[k] = gelu(x[k]);
        st_vec(post + v * VEC, x);
    }
}

// dinp = dout * gelu'(inp), in place of dout allowed (n a multiple of VEC).
extern "C" __global__ void gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, size_t n) {
    FOR_EACH(v, n / VEC) {
        float x[VEC], g[VEC];
        ld_vec(x, inp + v * VEC);
        ld_vec(g, dout + v * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float xi = x[k];
            const float th = tanhf(GELU_K * (xi + 0.044715f * xi * xi * xi));
            const float du = GELU_K * (1.0f + 3.0f * 0.044715f * xi * xi);
            g[k] *= 0.5f * (1.0f + th) + 0.5f * xi * (1.0f - th * th) * du;
        }
        st_vec(dinp + v * VEC, g);
    }
}

// SwiGLU (Llama's MLP activation): inp (N, 2F) rows [gate | up], out (N, F) =
// silu(gate) * up, silu(g) = g * s, s = 1 / (1 + exp(-g)). Backward (s recomputed):
// dgate = dout * up * s * (1 + g * (1 - s)), dup = dout * silu(g), into dinp (N, 2F).
// F a multiple of VEC. 2-D launch over (N rows, F columns).
extern "C" __global__ void swiglu_forward(floatX* out, const floatX* inp, int N, int F) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (c >= F) return;
    float g[VEC], u[VEC];
    FOR_ROWS(r, N) {
        const floatX* x = inp + (size_t)r * 2 * F + c;
        ld_vec(g, x);
        ld_vec(u, x + F);
#pragma unroll
        for (int k = 0; k < VEC; k++) g[k] = g[k] / (1.0f + __expf(-g[k])) * u[k];
        st_vec(out + (size_t)r * F + c, g);
    }
}

extern "C" __global__ void swiglu_backward(floatX* dinp, const floatX* dout, const floatX* inp, int N, int F) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (c >= F) return;
    float g[VEC], u[VEC], dy[VEC];
    FOR_ROWS(r, N) {
        const size_t i = (size_t)r * 2 * F + c;
        ld_vec(g, inp + i);
        ld_vec(u, inp + i + F);
        ld_vec(dy, dout + (size_t)r * F + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float s = 1.0f / (1.0f + __expf(-g[k]));
            const float dg = dy[k] * u[k] * s * (1.0f + g[k] * (1.0f - s));
            u[k] = dy[k] * g[k] * s;  // dup
            g[k] = dg;
        }
        st_vec(dinp + i, g);
        st_vec(dinp + i + F, u);
    }
}

// A projection's output joins the residual stream, bias and dropout fused:
// out (N,C) = a + drop(b + bias)   (out may alias a; bias null: none). Dropout index r*C + c.
// 2-D launch.
extern "C" __global__ void residual_forward(floatX* out, const floatX* a, const floatX* b, const floatX* bias,
                                            int N, int C, float p, u64 seed) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (c >= C) return;
    float bv[VEC] = {}, x[VEC], y[VEC];
    if (bias) ld_vec(bv, bias + c);
    FOR_ROWS(r, N) {
        const size_t i = (size_t)r * C + c;
        ld_vec(x, a + i);
        ld_vec(y, b + i);
#pragma unroll
        for (int k = 0; k < VEC; k++) x[k] += (y[k] + bv[k]) * dropout_factor(seed, i + k, p);
        st_vec(out + i, x);
    }
}

// dst = drop'(src): the gradient through a dropout, from the same (seed, index) mask
// (n a multiple of VEC).
extern "C" __global__ void dropout_backward(floatX* dst, const floatX* src, size_t n, float p, u64 seed) {
    FOR_EACH(v, n / VEC) {
        float x[VEC];
        ld_vec(x, src + v * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) x[k] *= dropout_factor(seed, v * VEC + k, p);
        st_vec(dst + v * VEC, x);
    }
}

// dst = floatX(src): the working copy of the f32 master weights.
extern "C" __global__ void to_floatx(floatX* dst, const float* src, size_t n) {
    FOR_EACH(i, n) dst[i] = from_f(src[i]);
}

// dst = f32(src)
extern "C" __global__ void from_floatx(float* dst, const floatX* src, size_t n) {
    FOR_EACH(i, n) dst[i] = to_f(src[i]);
}
