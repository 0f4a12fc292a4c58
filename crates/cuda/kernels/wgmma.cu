// Rung 11, Hopper tensor cores: `wgmma` (warpgroup MMA, sm_90a), bf16 inputs, f32
// accumulation. Compiled for compute_90a, so only on compute capability 9.0.
//
// Block tile 128×256, BK = 64, two warpgroups (256 threads); warpgroup g computes rows
// g*64..g*64+63 of the tile with `wgmma.mma_async.m64n256k16`, whose A and B operands are read
// by the tensor cores straight from shared memory (no ldmatrix, no operand registers) and whose
// 64×256 f32 accumulators live in registers (128 a thread). Tiles move global → shared with
// cp.async through a 4-stage ring, stored in the 128-byte-swizzled layout that the wgmma shared
// memory descriptors describe:
//   A (K-major): row r (m) is 128 bytes = 64 k-values; 16-byte chunk c sits at chunk c ^ (r % 8);
//                descriptor SBO = 1024 bytes (next group of 8 rows); +32 bytes per k16 step.
//   B (MN-major, B is stored k×n): for each 64-wide column slice j, k-row r is 128 bytes =
//                64 n-values, chunk c at c ^ (r % 8); slice j at j·8192 bytes (descriptor LBO),
//                next 8 k-rows at +1024 (SBO); +2048 bytes per k16 step; transpose flag set.
// Each writing thread fences the async proxy before the barrier, so that the tensor cores see
// the stores (HOPPER.md). The wgmma of one k-tile is left running while the block passes the
// next barrier and issues the next tile's wgmma (wait_group 1), so the tensor cores do not idle
// at the barrier; loads run two tiles ahead.
typedef unsigned short bf16_t;
#define BM 128
#define BN 256
#define BK 64
#define STAGES 4
#define NT 256
#define A_BYTES (BM * BK * 2)   // 16 KB a stage
#define B_BYTES (BK * BN * 2)   // 32 KB a stage

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
__device__ __forceinline__ void st_shared_u16(unsigned addr, bf16_t v) {
    asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(addr), "h"(v));
}

// A wgmma shared-memory descriptor: start address, leading and stride byte offsets, 128B swizzle.
__device__ __forceinline__ unsigned long long desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) |
           ((unsigned long long)((lbo & 0x3FFFF) >> 4) << 16) |
           ((unsigned long long)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], unsigned long long da,
                                                 unsigned long long db) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, "
        "%128, %129, p, 1, 1, 0, 1;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
        "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
        "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
        "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
        "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),
        "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]),
        "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]),
        "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]),
        "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]),
        "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]),
        "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),
        "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]),
        "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]),
        "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]),
        "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db));
}

// Byte offset of element (r, c) of a 128-byte-row swizzled tile (c in elements, < 64).
__device__ __forceinline__ unsigned swz(int r, int c) {
    return r * 128 + ((((c >> 3) ^ (r & 7)) << 4) | ((c & 7) << 1));
}

template <bool CHECK>
__device__ __forceinline__ void load_tile(unsigned a_s, unsigned b_s, const bf16_t* __restrict__ A,
                                          const bf16_t* __restrict__ B, int M, int N, int K,
                                          int row0, int col0, int k0, int tid) {
    if (!CHECK) {
#pragma unroll
        for (int i = 0; i < BM * BK / 8 / NT; ++i) {   // A: 128 rows × 8 chunks
            const int c = tid + i * NT, r = c / 8, cc = c % 8;
            cp_async16(a_s + swz(r, cc * 8), &A[(size_t)(row0 + r) * K + k0 + cc * 8]);
        }
#pragma unroll
        for (int i = 0; i < BK * BN / 8 / NT; ++i) {   // B: 64 rows × 32 chunks
            const int c = tid + i * NT, r = c / 32, nc = c % 32;
            cp_async16(b_s + (nc / 8) * (BK * 128) + swz(r, (nc % 8) * 8),
                       &B[(size_t)(k0 + r) * N + col0 + nc * 8]);
        }
    } else {
        for (int e = tid; e < BM * BK; e += NT) {
            const int r = e / BK, c = e % BK, gr = row0 + r, gc = k0 + c;
            st_shared_u16(a_s + swz(r, c), (gr < M && gc < K) ? A[(size_t)gr * K + gc] : (bf16_t)0);
        }
        for (int e = tid; e < BK * BN; e += NT) {
            const int r = e / BN, c = e % BN, gr = k0 + r, gc = col0 + c;
            st_shared_u16(b_s + (c / 64) * (BK * 128) + swz(r, c % 64),
                          (gr < K && gc < N) ? B[(size_t)gr * N + gc] : (bf16_t)0);
        }
    }
}

template <bool CHECK>
__device__ __forceinline__ void body(int M, int N, int K, const bf16_t* __restrict__ A,
                                     const bf16_t* __restrict__ B, float* __restrict__ C) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // The swizzle pattern is a function of the address: tiles must start 1024-byte aligned.
    const unsigned base = (smem_addr(smem_raw) + 1023) & ~1023u;
    const unsigned a_base = base, b_base = base + STAGES * A_BYTES;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wg = warp / 4;
    int bx = blockIdx.x, by = blockIdx.y;
    {   // groups of 8 block rows, walked column by column, for L2 reuse
        const int pid = blockIdx.y * gridDim.x + blockIdx.x, in_group = 8 * gridDim.x;
        const int first = (pid / in_group) * 8, size = min((int)gridDim.y - first, 8);
        by = first + (pid % in_group) % size;
        bx = (pid % in_group) / size;
    }
    const int row0 = by * BM, col0 = bx * BN;
    const int ntiles = CEIL_DIV(K, BK);
    float d[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) d[i] = 0.0f;

    // LOOK tiles are loaded ahead; the wgmma of tile t-1 may still be running while tile t's
    // are issued, so a stage is refilled only once the wgmma two tiles back has finished:
    // stages in use are t-1 (wgmma in flight), t (wgmma), t+1 (landing), t+2 (loading).
    constexpr int LOOK = STAGES - 2;
#pragma unroll
    for (int s = 0; s < LOOK; ++s) {
        if (s < ntiles) load_tile<CHECK>(a_base + s * A_BYTES, b_base + s * B_BYTES, A, B, M, N, K, row0, col0, s * BK, tid);
        cp_async_commit();
    }
    for (int t = 0; t < ntiles; ++t) {
        cp_async_wait<LOOK - 1>();            // tile t has landed (this thread's part)
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();                      // ... everyone's part; and every warpgroup has
                                              // finished the wgmma of tile t-2 (waited below)
        {
            const int tn = t + LOOK, s = tn % STAGES;
            if (tn < ntiles) load_tile<CHECK>(a_base + s * A_BYTES, b_base + s * B_BYTES, A, B, M, N, K, row0, col0, tn * BK, tid);
            cp_async_commit();
        }
        const unsigned a_s = a_base + (t % STAGES) * A_BYTES + wg * 64 * 128;
        const unsigned b_s = b_base + (t % STAGES) * B_BYTES;
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks)
            wgmma_m64n256k16(d, desc(a_s + ks * 32, 16, 1024), desc(b_s + ks * 2048, BK * 128, 1024));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");   // tile t-1 done
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    cp_async_wait<0>();
    // Accumulators of m64nNk16: d[j] is row w*16 + lane/4 + 8*((j/2)%2), column
    // (j/4)*8 + 2*(lane%4) + j%2, w = warp within the warpgroup.
    const int w = warp % 4;
#pragma unroll
    for (int j = 0; j < 128; j += 2) {
        const int r = row0 + wg * 64 + w * 16 + lane / 4 + 8 * ((j / 2) % 2);
        const int c = col0 + (j / 4) * 8 + 2 * (lane % 4);
        if (CHECK) {
            if (r < M && c < N) C[(size_t)r * N + c] = d[j];
            if (r < M && c + 1 < N) C[(size_t)r * N + c + 1] = d[j + 1];
        } else {
            *reinterpret_cast<float2*>(&C[(size_t)r * N + c]) = make_float2(d[j], d[j + 1]);
        }
    }
}
// Dynamic shared memory: STAGES * (A_BYTES + B_BYTES) + 1024 (alignment) = 197,632 bytes.
extern "C" __global__ void __launch_bounds__(NT, 1) hgemm_wgmma(int M, int N, int K,
        const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, float* __restrict__ C) {
    body<false>(M, N, K, A, B, C);
}
extern "C" __global__ void __launch_bounds__(NT, 1) hgemm_wgmma_edge(int M, int N, int K,
        const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, float* __restrict__ C) {
    body<true>(M, N, K, A, B, C);
}
