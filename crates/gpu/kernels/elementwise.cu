// Elementwise layers, forward and backward side by side: bias, GELU (tanh approximation),
// residual add with the residual-branch dropout fused, and the dtype conversion.

// out (N,OC) += bias (OC)
extern "C" __global__ void add_bias(floatX* out, const floatX* bias, int N, int OC) {
    FOR_EACH(i, (size_t)N * OC) out[i] = from_f(to_f(out[i]) + to_f(bias[i % OC]));
}

#define GELU_K 0.7978845608028654f  // sqrt(2/pi)

// out = 0.5 x (1 + tanh(k (x + 0.044715 x^3)))
extern "C" __global__ void gelu_forward(floatX* out, const floatX* inp, size_t n) {
    FOR_EACH(i, n) {
        const float x = to_f(inp[i]);
        out[i] = from_f(0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x))));
    }
}

// dinp = dout * gelu'(inp), written in place of dout (dinp may alias dout).
extern "C" __global__ void gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, size_t n) {
    FOR_EACH(i, n) {
        const float x = to_f(inp[i]);
        const float u = GELU_K * (x + 0.044715f * x * x * x);
        const float th = tanhf(u);
        const float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        const float g = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        dinp[i] = from_f(to_f(dout[i]) * g);
    }
}

// out = a + drop(b)   (out may alias a)
extern "C" __global__ void residual_forward(floatX* out, const floatX* a, const floatX* b, size_t n,
                                            float p, u64 seed) {
    FOR_EACH(i, n) out[i] = from_f(to_f(a[i]) + to_f(b[i]) * dropout_factor(seed, i, p));
}

// dst = drop'(src): the gradient through a dropout, from the same (seed, index) mask.
extern "C" __global__ void dropout_backward(floatX* dst, const floatX* src, size_t n, float p, u64 seed) {
    FOR_EACH(i, n) dst[i] = from_f(to_f(src[i]) * dropout_factor(seed, i, p));
}

// dst = floatX(src): the working copy of the f32 master weights.
extern "C" __global__ void to_floatx(floatX* dst, const float* src, size_t n) {
    FOR_EACH(i, n) dst[i] = from_f(src[i]);
}

// dst = f32(src)
extern "C" __global__ void from_floatx(float* dst, const floatX* src, size_t n) {
    FOR_EACH(i, n) dst[i] = to_f(src[i]);
}
