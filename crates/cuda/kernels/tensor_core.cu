// Rungs 9 and 10, tensor cores: bf16 inputs, f32 accumulation, through the warp-level
// `mma.sync.m16n8k16` instruction (sm_80 and later; on Hopper it runs on the tensor cores,
// but slower than Hopper's own warpgroup `wgmma`, which cuBLAS uses).
//
// One template. A block computes a BM×BN tile of C with 8 warps, each a WM×WN warp tile made
// of (WM/16)×(WN/8) mma tiles of 16×8 (f32 accumulators in registers). Tiles of A and B move
// global → shared with `cp.async` (16 bytes a copy, no registers on the way) through a
// STAGES-deep ring, so the loads of tile t+STAGES-1 overlap the products of tile t; operands
// move shared → registers with `ldmatrix` (`.trans` for B, which is stored k-major). Rows are
// padded by 16 bytes, so the 8 row addresses of each ldmatrix fall in 8 different bank groups.
// With FRAG_DB the fragments of the next 16-wide k-slice are loaded before the products of
// this one; with SWIZZLE, consecutive blocks walk down a group of 8 block rows, so the tiles
// of B they share are still in L2.
//
// bf16 values are passed as raw `unsigned short` bits, so the kernel needs no CUDA header.
// The `_edge` variants (partial tiles, or rows not a multiple of 8 elements) fill the shared
// tiles with guarded scalar loads instead of cp.async.
typedef unsigned short bf16_t;

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <int BM, int BN, int BK, int NT, bool CHECK>
__device__ __forceinline__ void load_tile(bf16_t* As, bf16_t* Bs, const bf16_t* __restrict__ A,
                                          const bf16_t* __restrict__ B, int M, int N, int K,
                                          int row0, int col0, int k0, int tid) {
    constexpr int AS = BK + 8, BS = BN + 8;
    if (!CHECK) {
#pragma unroll
        for (int i = 0; i < BM * BK / 8 / NT; ++i) {   // A: BM rows × BK/8 chunks of 8
            const int c = tid + i * NT, r = c / (BK / 8), cc = (c % (BK / 8)) * 8;
            cp_async16(&As[r * AS + cc], &A[(size_t)(row0 + r) * K + k0 + cc]);
        }
#pragma unroll
        for (int i = 0; i < BK * BN / 8 / NT; ++i) {   // B: BK rows × BN/8 chunks of 8
            const int c = tid + i * NT, r = c / (BN / 8), cc = (c % (BN / 8)) * 8;
            cp_async16(&Bs[r * BS + cc], &B[(size_t)(k0 + r) * N + col0 + cc]);
        }
    } else {
        for (int e = tid; e < BM * BK; e += NT) {
            const int r = e / BK, c = e % BK, gr = row0 + r, gc = k0 + c;
            As[r * AS + c] = (gr < M && gc < K) ? A[(size_t)gr * K + gc] : (bf16_t)0;
        }
        for (int e = tid; e < BK * BN; e += NT) {
            const int r = e / BN, c = e % BN, gr = k0 + r, gc = col0 + c;
            Bs[r * BS + c] = (gr < K && gc < N) ? B[(size_t)gr * N + gc] : (bf16_t)0;
        }
    }
}

// Fragments of one 16-wide k-slice for a warp: MI A tiles (16×16), NI B tiles (16×8).
template <int MI, int NI, int AS, int BS>
__device__ __forceinline__ void load_frags(unsigned (&af)[MI][4], unsigned (&bf)[NI][2],
                                           const bf16_t* a_s, const bf16_t* b_s, int kk, int lane) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        const bf16_t* p = a_s + (mi * 16 + (lane % 16)) * AS + kk + (lane / 16) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(af[mi][0]), "=r"(af[mi][1]), "=r"(af[mi][2]), "=r"(af[mi][3])
                     : "r"(smem_addr(p)));
    }
#pragma unroll
    for (int nj = 0; nj < NI / 2; ++nj) {
        const bf16_t* p = b_s + (kk + (lane % 16)) * BS + nj * 16 + (lane / 16) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(bf[2 * nj][0]), "=r"(bf[2 * nj][1]), "=r"(bf[2 * nj + 1][0]), "=r"(bf[2 * nj + 1][1])
                     : "r"(smem_addr(p)));
    }
}

template <int MI, int NI>
__device__ __forceinline__ void mma_all(float (&acc)[MI][NI][4], const unsigned (&af)[MI][4],
                                        const unsigned (&bf)[NI][2]) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
            asm volatile(
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                : "+f"(acc[mi][ni][0]), "+f"(acc[mi][ni][1]), "+f"(acc[mi][ni][2]), "+f"(acc[mi][ni][3])
                : "r"(af[mi][0]), "r"(af[mi][1]), "r"(af[mi][2]), "r"(af[mi][3]),
                  "r"(bf[ni][0]), "r"(bf[ni][1]));
}

template <int BM, int BN, int BK, int WM, int WN, int STAGES, bool FRAG_DB, bool SWIZZLE, bool CHECK>
__device__ __forceinline__ void body(int M, int N, int K, const bf16_t* __restrict__ A,
                                     const bf16_t* __restrict__ B, float* __restrict__ C) {
    constexpr int NT = (BM / WM) * (BN / WN) * 32;
    constexpr int AS = BK + 8, BS = BN + 8, A_TILE = BM * AS, B_TILE = BK * BS;
    constexpr int MI = WM / 16, NI = WN / 8;
    extern __shared__ __align__(16) bf16_t smem[];
    bf16_t* As = smem;                        // STAGES × (BM × AS)
    bf16_t* Bs = smem + STAGES * A_TILE;      // STAGES × (BK × BS)
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / (BN / WN), wn = warp % (BN / WN);
    int bx = blockIdx.x, by = blockIdx.y;
    if (SWIZZLE) {   // groups of 8 block rows, walked column by column
        const int pid = blockIdx.y * gridDim.x + blockIdx.x, in_group = 8 * gridDim.x;
        const int first = (pid / in_group) * 8, size = min((int)gridDim.y - first, 8);
        by = first + (pid % in_group) % size;
        bx = (pid % in_group) / size;
    }
    const int row0 = by * BM, col0 = bx * BN;
    const int ntiles = CEIL_DIV(K, BK);
    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles)
            load_tile<BM, BN, BK, NT, CHECK>(As + s * A_TILE, Bs + s * B_TILE, A, B, M, N, K, row0, col0, s * BK, tid);
        cp_async_commit();
    }
    for (int t = 0; t < ntiles; ++t) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        {   // refill the stage that iteration t-1 consumed (everyone is past the barrier)
            const int tn = t + STAGES - 1, s = tn % STAGES;
            if (tn < ntiles)
                load_tile<BM, BN, BK, NT, CHECK>(As + s * A_TILE, Bs + s * B_TILE, A, B, M, N, K, row0, col0, tn * BK, tid);
            cp_async_commit();
        }
        const bf16_t* a_s = As + (t % STAGES) * A_TILE + wm * WM * AS;
        const bf16_t* b_s = Bs + (t % STAGES) * B_TILE + wn * WN;
        if (FRAG_DB) {
            unsigned af[2][MI][4], bf[2][NI][2];
            load_frags<MI, NI, AS, BS>(af[0], bf[0], a_s, b_s, 0, lane);
#pragma unroll
            for (int ks = 0; ks < BK / 16; ++ks) {
                if (ks + 1 < BK / 16)
                    load_frags<MI, NI, AS, BS>(af[(ks + 1) & 1], bf[(ks + 1) & 1], a_s, b_s, (ks + 1) * 16, lane);
                mma_all<MI, NI>(acc, af[ks & 1], bf[ks & 1]);
            }
        } else {
#pragma unroll
            for (int ks = 0; ks < BK / 16; ++ks) {
                unsigned af[MI][4], bf[NI][2];
                load_frags<MI, NI, AS, BS>(af, bf, a_s, b_s, ks * 16, lane);
                mma_all<MI, NI>(acc, af, bf);
            }
        }
    }
    cp_async_wait<0>();
    // Accumulator layout of m16n8: c0,c1 at (g, 2q..2q+1), c2,c3 at (g+8, 2q..2q+1),
    // g = lane/4, q = lane%4.
    const int g = lane / 4, q = lane % 4;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = row0 + wm * WM + mi * 16 + g + h * 8;
                const int c = col0 + wn * WN + ni * 8 + 2 * q;
                if (CHECK) {
                    if (r < M && c < N) C[(size_t)r * N + c] = acc[mi][ni][2 * h];
                    if (r < M && c + 1 < N) C[(size_t)r * N + c + 1] = acc[mi][ni][2 * h + 1];
                } else {
                    *reinterpret_cast<float2*>(&C[(size_t)r * N + c]) =
                        make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
                }
            }
}

// name, BM, BN, BK, WM, WN, STAGES, FRAG_DB, SWIZZLE; every kernel has 8 warps (256 threads).
// Dynamic shared memory: STAGES * (BM*(BK+8) + BK*(BN+8)) * 2 bytes (ladder.rs holds it).
#define TC_KERNEL(name, bm, bn, bk, wm, wn, st, fdb, sw)                                     \
    extern "C" __global__ void __launch_bounds__(256) name(int M, int N, int K,             \
            const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, float* __restrict__ C) { \
        body<bm, bn, bk, wm, wn, st, fdb, sw, false>(M, N, K, A, B, C);                      \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) name##_edge(int M, int N, int K,      \
            const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, float* __restrict__ C) { \
        body<bm, bn, bk, wm, wn, st, fdb, sw, true>(M, N, K, A, B, C);                       \
    }
// Rung 9: the plain pipeline.                                4*(128*40 + 32*136)*2 =  75,776
TC_KERNEL(hgemm_tensor_core, 128, 128, 32, 64, 32, 4, false, false)
// Rung 10 candidates (FERROGPT_TC_TILE picks one; ladder.rs names the default):
//                                                           4*(128*40 + 32*264)*2 = 108,544
TC_KERNEL(hgemm_tc_128x256x32, 128, 256, 32, 64, 64, 4, true, true)
//                                                           3*(128*72 + 64*264)*2 = 156,672
TC_KERNEL(hgemm_tc_128x256x64, 128, 256, 64, 64, 64, 3, true, true)
//                                                           3*(128*72 + 64*136)*2 = 107,520
TC_KERNEL(hgemm_tc_128x128x64, 128, 128, 64, 64, 32, 3, true, true)
//                                                           4*(256*40 + 32*136)*2 = 116,736
TC_KERNEL(hgemm_tc_256x128x32, 256, 128, 32, 64, 64, 4, true, true)
