// Rungs 9 and 10, tensor cores: bf16 inputs, f32 accumulation, through the warp-level
// `mma.sync.m16n8k16` instruction (sm_80 and later; on Hopper it runs on the tensor cores,
// though slower than Hopper's own warpgroup `wgmma`, which cuBLAS uses).
//
// One template, two tile shapes, 8 warps in a 2×(BN/WN) grid:
// * `hgemm_tensor_core`:      block 128×128, warp 64×32 = 4×4 mma tiles of 16×8 (64 f32
//   accumulators a thread);
// * `hgemm_tensor_core_wide`: block 128×256, warp 64×64 = 4×8 mma tiles (128 accumulators):
//   twice the products per byte loaded from shared memory and per ldmatrix.
// BK = 32. Tiles of A and B move global → shared with
// `cp.async` (16 bytes a copy, no registers on the way) through a STAGES-deep ring, so the
// loads of tile t+3 overlap the products of tile t; operands move shared → registers with
// `ldmatrix` (`.trans` for B, stored k-major). Rows are padded by 16 bytes: the 8 row
// addresses of each ldmatrix then fall in 8 different bank groups.
//
// bf16 values are passed as raw `unsigned short` bits, so the kernel needs no CUDA header.
// The `_edge` variant (partial tiles, or rows not a multiple of 8 elements) fills the shared
// tiles with guarded scalar loads instead of cp.async.
typedef unsigned short bf16_t;
#define BM 128
#define BK 32
#define STAGES 4
#define AS (BK + 8)    // A row stride in shared memory, elements (80 bytes)
#define A_TILE (BM * AS)
#define NT 256
// B row stride BS = BN + 8 elements (272 or 528 bytes), B tile BK × BS.

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

template <int BN, bool CHECK>
__device__ __forceinline__ void load_tile(bf16_t* As, bf16_t* Bs, const bf16_t* __restrict__ A,
                                          const bf16_t* __restrict__ B, int M, int N, int K,
                                          int row0, int col0, int k0, int tid) {
    constexpr int BS = BN + 8;
    if (!CHECK) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {            // A: 128 rows × 4 chunks of 8
            const int c = tid + i * NT, r = c / 4, cc = (c % 4) * 8;
            cp_async16(&As[r * AS + cc], &A[(size_t)(row0 + r) * K + k0 + cc]);
        }
#pragma unroll
        for (int i = 0; i < BN / 64; ++i) {      // B: 32 rows × BN/8 chunks of 8
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

template <int BN, int WN, bool CHECK>
__device__ __forceinline__ void body(int M, int N, int K, const bf16_t* __restrict__ A,
                                     const bf16_t* __restrict__ B, float* __restrict__ C) {
    constexpr int BS = BN + 8, B_TILE = BK * BS, NI = WN / 8;   // NI: n8 tiles per warp
    extern __shared__ __align__(16) bf16_t smem[];
    bf16_t* As = smem;                        // STAGES × (BM × AS)
    bf16_t* Bs = smem + STAGES * A_TILE;      // STAGES × (BK × BS)
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / (BN / WN), wn = warp % (BN / WN);   // rows wm*64.., cols wn*WN..
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int ntiles = CEIL_DIV(K, BK);
    float acc[4][NI][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) load_tile<BN, CHECK>(As + s * A_TILE, Bs + s * B_TILE, A, B, M, N, K, row0, col0, s * BK, tid);
        cp_async_commit();
    }
    for (int t = 0; t < ntiles; ++t) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        {   // refill the stage that iteration t-1 consumed (everyone is past the barrier)
            const int tn = t + STAGES - 1, s = tn % STAGES;
            if (tn < ntiles) load_tile<BN, CHECK>(As + s * A_TILE, Bs + s * B_TILE, A, B, M, N, K, row0, col0, tn * BK, tid);
            cp_async_commit();
        }
        const bf16_t* a_s = As + (t % STAGES) * A_TILE;
        const bf16_t* b_s = Bs + (t % STAGES) * B_TILE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[4][4], bfr[NI][2];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
                const bf16_t* p = a_s + (wm * 64 + mi * 16 + (lane % 16)) * AS + kk + (lane / 16) * 8;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                             : "=r"(af[mi][0]), "=r"(af[mi][1]), "=r"(af[mi][2]), "=r"(af[mi][3])
                             : "r"(smem_addr(p)));
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                const bf16_t* p = b_s + (kk + (lane % 16)) * BS + wn * WN + nj * 16 + (lane / 16) * 8;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                             : "=r"(bfr[2 * nj][0]), "=r"(bfr[2 * nj][1]), "=r"(bfr[2 * nj + 1][0]), "=r"(bfr[2 * nj + 1][1])
                             : "r"(smem_addr(p)));
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni)
                    asm volatile(
                        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                        : "+f"(acc[mi][ni][0]), "+f"(acc[mi][ni][1]), "+f"(acc[mi][ni][2]), "+f"(acc[mi][ni][3])
                        : "r"(af[mi][0]), "r"(af[mi][1]), "r"(af[mi][2]), "r"(af[mi][3]),
                          "r"(bfr[ni][0]), "r"(bfr[ni][1]));
        }
    }
    cp_async_wait<0>();
    // Accumulator layout of m16n8: c0,c1 at (g, 2q..2q+1), c2,c3 at (g+8, 2q..2q+1),
    // g = lane/4, q = lane%4.
    const int g = lane / 4, q = lane % 4;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = row0 + wm * 64 + mi * 16 + g + h * 8;
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
#define TC_KERNEL(name, bn, wn, check)                                                       \
    extern "C" __global__ void __launch_bounds__(NT) name(int M, int N, int K,              \
            const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, float* __restrict__ C) { \
        body<bn, wn, check>(M, N, K, A, B, C);                                               \
    }
TC_KERNEL(hgemm_tensor_core, 128, 32, false)
TC_KERNEL(hgemm_tensor_core_edge, 128, 32, true)
TC_KERNEL(hgemm_tensor_core_wide, 256, 64, false)
TC_KERNEL(hgemm_tensor_core_wide_edge, 256, 64, true)
// Dynamic shared memory one block needs (bytes); ladder.rs holds the same figures:
// STAGES * (BM*AS + BK*(BN+8)) * 2 = 4 * (5120 + 4352) * 2 = 75,776 (BN 128)
//                                  = 4 * (5120 + 8448) * 2 = 108,544 (BN 256)
