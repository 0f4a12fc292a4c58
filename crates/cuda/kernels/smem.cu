// Rung 3, shared-memory tiling: a 32×32 block of threads computes a 32×32 tile of C. For each
// 32-wide slice of K the block copies a 32×32 tile of A and of B into shared memory once
// (coalesced), then every thread reads its row and column from there: each global element is
// read by the block once instead of 32 times.
#define TS 32
extern "C" __global__ void sgemm_smem(int M, int N, int K, const float* __restrict__ A,
                                      const float* __restrict__ B, float* __restrict__ C) {
    __shared__ float As[TS][TS];
    __shared__ float Bs[TS][TS + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * TS + ty, col = blockIdx.x * TS + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TS) {
        As[ty][tx] = ld_or_zero<true>(A, row, k0 + tx, M, K, K);
        Bs[ty][tx] = ld_or_zero<true>(B, k0 + ty, col, K, N, N);
        __syncthreads();
#pragma unroll
        for (int p = 0; p < TS; ++p) acc += As[ty][p] * Bs[p][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[(size_t)row * N + col] = acc;
}
