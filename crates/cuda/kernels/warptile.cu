// Rung 7, warp tiling: a third level of tiling between the block and the thread. The 128×128
// block tile is split into four 64×64 warp tiles (4 warps, 128 threads); each warp walks its
// tile in WNITER = 4 sub-tiles of 64×16, each thread computing 8×4 of each (8×16 in all).
// A warp's shared-memory reads then touch few, regular addresses (fewer bank conflicts), the
// register tile is larger (128 accumulators a thread) and BK = 16 halves the barriers.
// The loads are rung 6's float4 loads, with a transposed A tile.
#define BM 128
#define BN 128
#define BK 16
#define WM 64
#define WN 64
#define WNITER 4
#define TM 8
#define TN 4
#define NT 128
#define WMITER ((WM * WN) / (32 * TM * TN * WNITER))   // 1
#define WSUBM (WM / WMITER)                              // 64
#define WSUBN (WN / WNITER)                              // 16
template <bool CHECK>
__device__ __forceinline__ void body(int M, int N, int K, const float* __restrict__ A,
                                     const float* __restrict__ B, float* __restrict__ C) {
    __shared__ __align__(16) float As[BK * BM];   // transposed: As[p*BM + m]
    __shared__ __align__(16) float Bs[BK * BN];
    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int warp_col = warp % (BN / WN), warp_row = warp / (BN / WN);
    const int t_row = lane / (WSUBN / TN), t_col = lane % (WSUBN / TN);   // 8 × 4 threads
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;   // rows 0..31, step 32
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;   // rows 0..3, step 4
    float acc[WMITER * TM * WNITER * TN] = {0.0f};
    float rm[WMITER * TM], rn[WNITER * TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int off = 0; off < BM; off += NT * 4 / BK) {
            float4 v;
            const int r = row0 + a_r + off, c = k0 + a_c;
            if (CHECK) {
                v.x = ld_or_zero<true>(A, r, c + 0, M, K, K);
                v.y = ld_or_zero<true>(A, r, c + 1, M, K, K);
                v.z = ld_or_zero<true>(A, r, c + 2, M, K, K);
                v.w = ld_or_zero<true>(A, r, c + 3, M, K, K);
            } else {
                v = *reinterpret_cast<const float4*>(&A[(size_t)r * K + c]);
            }
            As[(a_c + 0) * BM + a_r + off] = v.x;
            As[(a_c + 1) * BM + a_r + off] = v.y;
            As[(a_c + 2) * BM + a_r + off] = v.z;
            As[(a_c + 3) * BM + a_r + off] = v.w;
        }
#pragma unroll
        for (int off = 0; off < BK; off += NT / (BN / 4)) {
            float4 v;
            const int r = k0 + b_r + off, c = col0 + b_c;
            if (CHECK) {
                v.x = ld_or_zero<true>(B, r, c + 0, K, N, N);
                v.y = ld_or_zero<true>(B, r, c + 1, K, N, N);
                v.z = ld_or_zero<true>(B, r, c + 2, K, N, N);
                v.w = ld_or_zero<true>(B, r, c + 3, K, N, N);
            } else {
                v = *reinterpret_cast<const float4*>(&B[(size_t)r * N + c]);
            }
            *reinterpret_cast<float4*>(&Bs[(b_r + off) * BN + b_c]) = v;
        }
        __syncthreads();
#pragma unroll
        for (int p = 0; p < BK; ++p) {
#pragma unroll
            for (int ws = 0; ws < WMITER; ++ws)
#pragma unroll
                for (int i = 0; i < TM; i += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        &As[p * BM + warp_row * WM + ws * WSUBM + t_row * TM + i]);
                    rm[ws * TM + i] = v.x; rm[ws * TM + i + 1] = v.y;
                    rm[ws * TM + i + 2] = v.z; rm[ws * TM + i + 3] = v.w;
                }
#pragma unroll
            for (int ws = 0; ws < WNITER; ++ws) {
                const float4 v = *reinterpret_cast<const float4*>(
                    &Bs[p * BN + warp_col * WN + ws * WSUBN + t_col * TN]);
                rn[ws * TN] = v.x; rn[ws * TN + 1] = v.y;
                rn[ws * TN + 2] = v.z; rn[ws * TN + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
                for (int j = 0; j < WNITER * TN; ++j)
                    acc[i * (WNITER * TN) + j] += rm[i] * rn[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int wm = 0; wm < WMITER; ++wm)
#pragma unroll
        for (int wn = 0; wn < WNITER; ++wn)
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const int r = row0 + warp_row * WM + wm * WSUBM + t_row * TM + i;
                const int c = col0 + warp_col * WN + wn * WSUBN + t_col * TN;
                const float* a = &acc[(wm * TM + i) * (WNITER * TN) + wn * TN];
                if (CHECK) {
#pragma unroll
                    for (int j = 0; j < TN; ++j)
                        if (r < M && c + j < N) C[(size_t)r * N + c + j] = a[j];
                } else {
                    *reinterpret_cast<float4*>(&C[(size_t)r * N + c]) =
                        make_float4(a[0], a[1], a[2], a[3]);
                }
            }
}
extern "C" __global__ void __launch_bounds__(NT) sgemm_warptile(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<false>(M, N, K, A, B, C);
}
extern "C" __global__ void __launch_bounds__(NT) sgemm_warptile_edge(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<true>(M, N, K, A, B, C);
}
