// Fused softmax + cross-entropy over the (padded) vocabulary, forward and backward in one pass.
//
// logits (N, Vp) floatX; only the first V columns are real. For each row n:
//   losses[n] = logsumexp(logits[n, :V]) - logits[n, targets[n]]
// and, when dscale != 0, the logits are overwritten by their gradient
//   dlogits[n, j] = dscale * (softmax[n, j] - [j == target])   (j < V),   0 for padded columns
// (dscale = 1/N for the mean over the batch, times the micro-batch's weight).
// One block per row; f32 throughout.

extern "C" __global__ void softmax_ce(floatX* logits, float* losses, const int* targets, int N, int V,
                                      int Vp, float dscale) {
    __shared__ float scratch[32];
    const int n = blockIdx.x;
    floatX* x = logits + (size_t)n * Vp;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, to_f(x[j]));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += __expf(to_f(x[j]) - m);
    s = block_sum(s, scratch);
    const int tgt = targets[n];
    const float lse = m + logf(s);
    if (threadIdx.x == 0) losses[n] = lse - to_f(x[tgt]);
    __syncthreads();  // the target logit is read before it is overwritten
    if (dscale != 0.0f) {
        const float inv = 1.0f / s;
        for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
            const float g = j < V ? __expf(to_f(x[j]) - m) * inv - (j == tgt ? 1.0f : 0.0f) : 0.0f;
            x[j] = from_f(g * dscale);
        }
    }
}
