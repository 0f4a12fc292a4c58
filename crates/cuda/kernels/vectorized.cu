// Rung 6, vectorised loads: rung 5's 128×128 tile and 8×8 outer products per thread, with
// 16-byte (float4) loads from global memory and from shared memory. The A tile is stored
// transposed (As[k][m]) so that a thread's 8 values of A for one k are contiguous and come in
// two float4 loads, like its 8 values of B. C is written with float4 stores.
// The `_edge` variant (partial tiles, or rows not a multiple of 4 floats) loads scalars.
#define BM 128
#define BN 128
#define BK 8
#define TM 8
#define TN 8
template <bool CHECK>
__device__ __forceinline__ void body(int M, int N, int K, const float* __restrict__ A,
                                     const float* __restrict__ B, float* __restrict__ C) {
    __shared__ __align__(16) float As[BK * BM];   // transposed: As[p*BM + m]
    __shared__ __align__(16) float Bs[BK * BN];
    const int tid = threadIdx.x;
    const int trow = tid / (BN / TN), tcol = tid % (BN / TN);
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;   // 128 rows × 2 float4
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;   // 8 rows × 32 float4
    float acc[TM][TN] = {{0.0f}};
    float ra[TM], rb[TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
        float4 va, vb;
        if (CHECK) {
            va.x = ld_or_zero<true>(A, row0 + a_r, k0 + a_c + 0, M, K, K);
            va.y = ld_or_zero<true>(A, row0 + a_r, k0 + a_c + 1, M, K, K);
            va.z = ld_or_zero<true>(A, row0 + a_r, k0 + a_c + 2, M, K, K);
            va.w = ld_or_zero<true>(A, row0 + a_r, k0 + a_c + 3, M, K, K);
            vb.x = ld_or_zero<true>(B, k0 + b_r, col0 + b_c + 0, K, N, N);
            vb.y = ld_or_zero<true>(B, k0 + b_r, col0 + b_c + 1, K, N, N);
            vb.z = ld_or_zero<true>(B, k0 + b_r, col0 + b_c + 2, K, N, N);
            vb.w = ld_or_zero<true>(B, k0 + b_r, col0 + b_c + 3, K, N, N);
        } else {
            va = *reinterpret_cast<const float4*>(&A[(size_t)(row0 + a_r) * K + k0 + a_c]);
            vb = *reinterpret_cast<const float4*>(&B[(size_t)(k0 + b_r) * N + col0 + b_c]);
        }
        As[(a_c + 0) * BM + a_r] = va.x;
        As[(a_c + 1) * BM + a_r] = va.y;
        As[(a_c + 2) * BM + a_r] = va.z;
        As[(a_c + 3) * BM + a_r] = va.w;
        *reinterpret_cast<float4*>(&Bs[b_r * BN + b_c]) = vb;
        __syncthreads();
#pragma unroll
        for (int p = 0; p < BK; ++p) {
#pragma unroll
            for (int i = 0; i < TM; i += 4) {
                const float4 v = *reinterpret_cast<const float4*>(&As[p * BM + trow * TM + i]);
                ra[i] = v.x; ra[i + 1] = v.y; ra[i + 2] = v.z; ra[i + 3] = v.w;
            }
#pragma unroll
            for (int j = 0; j < TN; j += 4) {
                const float4 v = *reinterpret_cast<const float4*>(&Bs[p * BN + tcol * TN + j]);
                rb[j] = v.x; rb[j + 1] = v.y; rb[j + 2] = v.z; rb[j + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int r = row0 + trow * TM + i;
#pragma unroll
        for (int j = 0; j < TN; j += 4) {
            const int c = col0 + tcol * TN + j;
            if (CHECK) {
                if (r < M) {
                    if (c + 0 < N) C[(size_t)r * N + c + 0] = acc[i][j + 0];
                    if (c + 1 < N) C[(size_t)r * N + c + 1] = acc[i][j + 1];
                    if (c + 2 < N) C[(size_t)r * N + c + 2] = acc[i][j + 2];
                    if (c + 3 < N) C[(size_t)r * N + c + 3] = acc[i][j + 3];
                }
            } else {
                *reinterpret_cast<float4*>(&C[(size_t)r * N + c]) =
                    make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]);
            }
        }
    }
}
extern "C" __global__ void __launch_bounds__(256) sgemm_vectorized(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<false>(M, N, K, A, B, C);
}
extern "C" __global__ void __launch_bounds__(256) sgemm_vectorized_edge(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<true>(M, N, K, A, B, C);
}
