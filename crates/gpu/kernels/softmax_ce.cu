// Fused softmax + cross-entropy over the (padded) vocabulary, forward and backward in one pass.
//
// logits (N, Vp) floatX; only the first V columns are real. For each row n:
//   losses[n] = logsumexp(logits[n, :V]) - logits[n, targets[n]]
// and, when dscale != 0, the logits are overwritten by their gradient
//   dlogits[n, j] = dscale * (softmax[n, j] - [j == target])   (j < V),   0 for padded columns
// (dscale = 1/N for the mean over the batch, times the micro-batch's weight).
// One block per row; f32 throughout.

// Online max and sum in one pass (each thread keeps its own (max, sum), merged at the end),
// then one pass writing the gradient: two reads of the row instead of three. 16-byte vectors
// when rows are vector-aligned (Vp a multiple of VEC), else element by element.
extern "C" __global__ void softmax_ce(floatX* logits, float* losses, const int* targets, int N, int V,
                                      int Vp, float dscale) {
    __shared__ float scratch[32];
    const int n = blockIdx.x;
    floatX* x = logits + (size_t)n * Vp;
    const bool vec = Vp % VEC == 0;
    float m = -INFINITY, s = 0.0f;
    if (vec) {
        float v[VEC];
        for (int j0 = threadIdx.x * VEC; j0 < V; j0 += blockDim.x * VEC) {
            ld_vec(v, x + j0);
            float vm = -INFINITY;
#pragma unroll
            for (int k = 0; k < VEC; k++) vm = j0 + k < V ? fmaxf(vm, v[k]) : vm;
            const float mn = fmaxf(m, vm);
            s *= __expf(m - mn);
#pragma unroll
            for (int k = 0; k < VEC; k++) s += j0 + k < V ? __expf(v[k] - mn) : 0.0f;
            m = mn;
        }
    } else {
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            const float v = to_f(x[j]);
            const float mn = fmaxf(m, v);
            s = s * __expf(m - mn) + __expf(v - mn);
            m = mn;
        }
    }
    const float bm = block_max(m, scratch);
    s = m == -INFINITY ? 0.0f : s * __expf(m - bm);
    s = block_sum(s, scratch);
    m = bm;
    const int tgt = targets[n];
    const float lse = m + logf(s);
    if (threadIdx.x == 0) losses[n] = lse - to_f(x[tgt]);
    __syncthreads();  // the target logit is read before it is overwritten
    if (dscale == 0.0f) return;
    const float inv = 1.0f / s;
    if (vec) {
        float v[VEC];
        for (int j0 = threadIdx.x * VEC; j0 < Vp; j0 += blockDim.x * VEC) {
            ld_vec(v, x + j0);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const int j = j0 + k;
                v[k] = j < V ? (__expf(v[k] - m) * inv - (j == tgt ? 1.0f : 0.0f)) * dscale : 0.0f;
            }
            st_vec(x + j0, v);
        }
    } else {
        for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
            const float g = j < V ? __expf(to_f(x[j]) - m) * inv - (j == tgt ? 1.0f : 0.0f) : 0.0f;
            x[j] = from_f(g * dscale);
        }
    }
}
