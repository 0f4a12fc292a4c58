// Optimizer updates on the flat f32 buffers, fused: one pass reads the gradient, updates the
// moments and the master weight, and writes the floatX working copy (when write_x).
// Weight decay applies where bit i of `decay` is set (2-D weights). `gscale` folds gradient
// clipping into the same pass. Matches crates/train/src/optim.rs (PyTorch's formulas).

__device__ __forceinline__ float decay_bit(const unsigned* decay, size_t i) {
    return (decay[i >> 5] >> (i & 31)) & 1u ? 1.0f : 0.0f;
}

// p -= lr*wd*p + (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
extern "C" __global__ void adamw(float* p, floatX* px, const float* g, float* m, float* v,
                                 const unsigned* decay, size_t n, float b1, float b2, float step_size,
                                 float bc2_sqrt, float eps, float wd, float gscale, int write_x) {
    FOR_EACH(i, n) {
        const float gi = g[i] * gscale;
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float pi = p[i];
        const float np = pi - (decay_bit(decay, i) * wd * pi + step_size * mi / (sqrtf(vi) / bc2_sqrt + eps));
        p[i] = np;
        if (write_x) px[i] = from_f(np);
    }
}

// SGD with momentum (PyTorch): g += wd*p (L2, masked); buf = mu*buf + g (mu > 0) or g; p -= lr*buf
extern "C" __global__ void sgd(float* p, floatX* px, const float* g, float* buf, const unsigned* decay,
                               size_t n, float lr, float mu, float wd, float gscale, int write_x) {
    FOR_EACH(i, n) {
        const float pi = p[i];
        const float gi = g[i] * gscale + decay_bit(decay, i) * wd * pi;
        const float bi = mu > 0.0f ? mu * buf[i] + gi : gi;
        buf[i] = bi;
        const float np = pi - lr * bi;
        p[i] = np;
        if (write_x) px[i] = from_f(np);
    }
}

// Sum of squares, stage 1: block b writes its partial to part[b] (fixed grid: deterministic).
extern "C" __global__ void sumsq_partial(float* part, const float* g, size_t n) {
    __shared__ float scratch[32];
    float s = 0.0f;
    FOR_EACH(i, n) s += g[i] * g[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// Stage 2 (one block): out[0] = Σ part[0..P] (each thread sums in f64, then a fixed-order tree).
extern "C" __global__ void sum_final(float* out, const float* part, int P) {
    __shared__ float scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < P; i += blockDim.x) s += part[i];
    const float t = block_sum((float)s, scratch);
    if (threadIdx.x == 0) out[0] = t;
}
