// Rung 8, double buffering: rung 7's block, warp and thread tiles, with two shared-memory
// buffers. While the warps multiply out of one buffer, each thread's loads of the *next* A and
// B tiles are already in flight into registers; they are stored to the other buffer after the
// products, and one barrier per k-step (instead of two) separates the steps. Global-memory
// latency then overlaps the arithmetic instead of stalling every warp at the barrier.
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
    __shared__ __align__(16) float As[2][BK * BM];   // transposed: As[buf][p*BM + m]
    __shared__ __align__(16) float Bs[2][BK * BN];
    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int warp_col = warp % (BN / WN), warp_row = warp / (BN / WN);
    const int t_row = lane / (WSUBN / TN), t_col = lane % (WSUBN / TN);   // 8 × 4 threads
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;   // rows 0..31, step 32
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;   // rows 0..3, step 4
    float acc[WMITER * TM * WNITER * TN] = {0.0f};
    float rm[WMITER * TM], rn[WNITER * TN];
    constexpr int A_LD = BM / (NT * 4 / BK), B_LD = BK / (NT / (BN / 4));   // float4 per thread
    float4 ra[A_LD], rbv[B_LD];
    // global -> registers: tile at k0
    auto fetch = [&](int k0) {
#pragma unroll
        for (int l = 0; l < A_LD; ++l) {
            const int r = row0 + a_r + l * (NT * 4 / BK), c = k0 + a_c;
            if (CHECK) {
                ra[l].x = ld_or_zero<true>(A, r, c + 0, M, K, K);
                ra[l].y = ld_or_zero<true>(A, r, c + 1, M, K, K);
                ra[l].z = ld_or_zero<true>(A, r, c + 2, M, K, K);
                ra[l].w = ld_or_zero<true>(A, r, c + 3, M, K, K);
            } else {
                ra[l] = *reinterpret_cast<const float4*>(&A[(size_t)r * K + c]);
            }
        }
#pragma unroll
        for (int l = 0; l < B_LD; ++l) {
            const int r = k0 + b_r + l * (NT / (BN / 4)), c = col0 + b_c;
            if (CHECK) {
                rbv[l].x = ld_or_zero<true>(B, r, c + 0, K, N, N);
                rbv[l].y = ld_or_zero<true>(B, r, c + 1, K, N, N);
                rbv[l].z = ld_or_zero<true>(B, r, c + 2, K, N, N);
                rbv[l].w = ld_or_zero<true>(B, r, c + 3, K, N, N);
            } else {
                rbv[l] = *reinterpret_cast<const float4*>(&B[(size_t)r * N + c]);
            }
        }
    };
    // registers -> shared buffer `buf`
    auto stash = [&](int buf) {
        float* as = As[buf];
        float* bs = Bs[buf];
#pragma unroll
        for (int l = 0; l < A_LD; ++l) {
            const int r = a_r + l * (NT * 4 / BK);
            as[(a_c + 0) * BM + r] = ra[l].x;
            as[(a_c + 1) * BM + r] = ra[l].y;
            as[(a_c + 2) * BM + r] = ra[l].z;
            as[(a_c + 3) * BM + r] = ra[l].w;
        }
#pragma unroll
        for (int l = 0; l < B_LD; ++l)
            *reinterpret_cast<float4*>(&bs[(b_r + l * (NT / (BN / 4))) * BN + b_c]) = rbv[l];
    };
    fetch(0);
    stash(0);
    __syncthreads();
    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += BK) {
        const bool more = k0 + BK < K;
        if (more) fetch(k0 + BK);          // in flight during the products below
        const float* as = As[buf];
        const float* bs = Bs[buf];
#pragma unroll
        for (int p = 0; p < BK; ++p) {
#pragma unroll
            for (int ws = 0; ws < WMITER; ++ws)
#pragma unroll
                for (int i = 0; i < TM; i += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        &as[p * BM + warp_row * WM + ws * WSUBM + t_row * TM + i]);
                    rm[ws * TM + i] = v.x; rm[ws * TM + i + 1] = v.y;
                    rm[ws * TM + i + 2] = v.z; rm[ws * TM + i + 3] = v.w;
                }
#pragma unroll
            for (int ws = 0; ws < WNITER; ++ws) {
                const float4 v = *reinterpret_cast<const float4*>(
                    &bs[p * BN + warp_col * WN + ws * WSUBN + t_col * TN]);
                rn[ws * TN] = v.x; rn[ws * TN + 1] = v.y;
                rn[ws * TN + 2] = v.z; rn[ws * TN + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
                for (int j = 0; j < WNITER * TN; ++j)
                    acc[i * (WNITER * TN) + j] += rm[i] * rn[j];
        }
        if (more) stash(buf ^ 1);          // nobody reads buf^1 now: the last barrier saw to it
        __syncthreads();
        buf ^= 1;
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
extern "C" __global__ void __launch_bounds__(NT) sgemm_warptile_db(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<false>(M, N, K, A, B, C);
}
extern "C" __global__ void __launch_bounds__(NT) sgemm_warptile_db_edge(int M, int N, int K,
        const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
    body<true>(M, N, K, A, B, C);
}
