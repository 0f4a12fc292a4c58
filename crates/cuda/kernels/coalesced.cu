// Rung 2, global-memory coalescing: the same dot product per thread, but threadIdx.x walks
// along a *row* of C. A warp now reads one element of A (a broadcast) and 32 consecutive
// elements of B per step, and writes 32 consecutive elements of C: one transaction each.
extern "C" __global__ void sgemm_coalesced(int M, int N, int K, const float* __restrict__ A,
                                           const float* __restrict__ B, float* __restrict__ C) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    const int row = blockIdx.y * blockDim.y + threadIdx.y;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int p = 0; p < K; ++p) acc += A[(size_t)row * K + p] * B[(size_t)p * N + col];
        C[(size_t)row * N + col] = acc;
    }
}
