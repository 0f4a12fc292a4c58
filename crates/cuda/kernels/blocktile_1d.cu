// Rung 4, 1-D register blocking: each thread computes TM = 8 elements of one column of C.
// Per step of the inner loop it loads one element of B from shared memory into a register and
// reuses it for 8 products with 8 elements of A: shared-memory traffic per FMA drops by ~2x.
// Block tile 64×64, BK = 8, 512 threads.
#define BM 64
#define BN 64
#define BK 8
#define TM 8
template <bool CHECK>
__device__ __forceinline__ void body(int M, int N, int K, const float* __restrict__ A,
                                     const float* __restrict__ B, float* __restrict__ C) {
    __shared__ float As[BM * BK];
    __shared__ float Bs[BK * BN];
    const int tid = threadIdx.x;
    const int tcol = tid % BN, trow = tid / BN;            // thread's column, row group (0..7)
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int a_r = tid / BK, a_c = tid % BK;               // 64×8 tile of A, one per thread
    const int b_r = tid / BN, b_c = tid % BN;               // 8×64 tile of B, one per thread
    float acc[TM] = {0.0f};
    for (int k0 = 0; k0 < K; k0 += BK) {
        As[a_r * BK + a_c] = ld_or_zero<CHECK>(A, row0 + a_r, k0 + a_c, M, K, K);
        Bs[b_r * BN + b_c] = ld_or_zero<CHECK>(B, k0 + b_r, col0 + b_c, K, N, N);
        __syncthreads();
#pragma unroll
        for (int p = 0; p < BK; ++p) {
            const float b = Bs[p * BN + tcol];
#pragma unroll
            for (int i = 0; i < TM; ++i) acc[i] += As[(trow * TM + i) * BK + p] * b;
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int r = row0 + trow * TM + i, c = col0 + tcol;
        if (!CHECK || (r < M && c < N)) C[(size_t)r * N + c] = acc[i];
    }
}
extern "C" __global__ void __launch_bounds__(512) sgemm_blocktile_1d(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<false>(M, N, K, A, B, C);
}
extern "C" __global__ void __launch_bounds__(512) sgemm_blocktile_1d_edge(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<true>(M, N, K, A, B, C);
}
