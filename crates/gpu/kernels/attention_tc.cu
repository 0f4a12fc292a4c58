// The fused attention of attention.cu on the tensor cores (bf16 builds, head size 64):
// same layouts (grouped-query qkv rows of W = (NH + 2·KV)·HS), same math, same outputs (out,
// lse, D, dqkv), FlashAttention-2's schedule. Key/value columns are addressed from the query
// head's pointer by one int offset (kd), to keep the forward and dq kernels in their register
// caps.
//
// A block is 4 warps; each warp owns 16 rows of a 64-row block (queries in the forward and dq
// kernels, keys in the dk/dv kernel) and sweeps 64-row tiles of the other side (keys, or
// queries) held in shared memory. Products are mma.sync.m16n8k16 (bf16 in, f32 accumulate);
// the warp's 16×64 score tile stays in registers, and its probabilities are re-packed in
// registers as the A operand of the next product (the C-fragment layout of two n8 tiles is
// the A-fragment layout of one k16 step). Softmax, masking, dropout and every statistic are
// f32.
//
// Where the time goes, and what this file does about it:
// - Operands come from shared memory through ldmatrix (one instruction gives a lane four
//   32-bit fragment registers: the B operands of two mma), with .trans for the operands that
//   are read down the columns (V, dO, K, Q as the right factor of P·V, dS·K, ...).
// - Tiles arrive by cp.async into two stages: tile t+1 is in flight while tile t is used.
// - Exponentials are exp2 of scores pre-multiplied by scale·log2(e) (one FFMA and one MUFU
//   per element); lse stays a natural log, converted when it is written or read.
// - Only the diagonal tile (and, in dk/dv, a partial last tile) is masked; dropout costs
//   nothing when p = 0 (one uniform branch per tile).
// - The causal forward and dq kernels start the blocks with the most key tiles first
//   (blockIdx.x counts from the end), so the short blocks fill the tail of the grid.
// - Occupancy is bound by registers: __launch_bounds__ caps the forward at 128 (4 blocks per
//   SM) and dq at 168 (3 blocks); dk/dv needs ~254 (2 blocks).
// On an H200 (B=16, NH=12, T=1024, p=0) this took the forward from 0.37 to 0.134 ms, dq from
// 0.68 to 0.16 ms and dk/dv from 0.69 to 0.21 ms.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, q = lane % 4; "r[i]" a 32-bit register
// holding two bf16, the lower-indexed element in the low half):
//   A (16×16, row-major): a0 = A[g][2q..2q+1], a1 = A[g+8][2q..], a2 = A[g][2q+8..],
//                         a3 = A[g+8][2q+8..]
//   B (16×8, k × n):      b0 = B[2q..2q+1][g],  b1 = B[2q+8..2q+9][g]
//   C (16×8, f32):        c0, c1 = C[g][2q], C[g][2q+1];  c2, c3 = C[g+8][2q], C[g+8][2q+1]
// ldmatrix.x4: lanes 8m..8m+7 give the addresses of the 8 rows (16 bytes each) of matrix m,
// and register m of lane (g, q) receives row g, columns 2q..2q+1 of it; with .trans it
// receives rows 2q and 2q+1 of column g instead.
#if FERRO_BF16

#define TC_HS 64
#define TC_LD 72                 // smem row stride in bf16: 144 B, so the 8 rows of an ldmatrix
                                 // 8×8 block (and 8 consecutive 16-B cp.async chunks) hit 8
                                 // different 16-byte bank groups: no conflicts
#define TC_TILE (64 * TC_LD)     // one 64×64 tile, in bf16 elements
#define TC_TILE_B (TC_TILE * 2)  // ... in bytes
#define TC_LOG2E 1.4426950408889634f
#define TC_LN2 0.6931471805599453f

// ---------------------------------------------------------------------------------------------
// PTX wrappers

__device__ __forceinline__ unsigned smem_u32(const void* p) {  // shared-window address
    unsigned r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

// 16 bytes global → shared, asynchronously; zeros when !valid (src-size 0: nothing is read).
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
// 4 bytes global → shared (f32 rows of lse and D, which are not 16-byte aligned in general).
__device__ __forceinline__ void cp_async4(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

__device__ __forceinline__ void mma_bf16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x (MUFU.EX2; 2^-inf = 0).
__device__ __forceinline__ float tc_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Two f32 → two bf16 (round to nearest even, like from_f) in one register, `lo` in the low half.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// ---------------------------------------------------------------------------------------------
// Tiles and fragments

// Starts the copy of rows [r0, r0+64) × 64 columns of a row-major bf16 matrix (`src` = its
// row 0, column 0 of the head; row stride `ld` elements) into the smem tile at `dst`; rows
// >= T become zeros. 512 chunks of 16 bytes, 4 per thread (8 threads per row: coalesced).
// Offsets from `src` are 32-bit (T·ld < 2^32, one batch row of qkv or dout): 64-bit row
// pointers kept across the loop cost registers that the compiler then spilled.
__device__ __forceinline__ void tc_async_tile(unsigned dst, const floatX* src, unsigned ld, int r0, int T) {
    const int c = threadIdx.x % 8;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = threadIdx.x / 8 + 16 * i, t = r0 + r;
        const unsigned off = (unsigned)min(t, T - 1) * ld + 8 * c;  // clamped: always a valid address
        cp_async16(dst + (r * TC_LD + 8 * c) * 2, src + off, t < T);
    }
}

// A fragments of the warp's 16 rows of a smem tile (rows 16w..16w+15, all 64 columns = 4 k16
// steps). ldmatrix.x4 per k-step: lane l addresses row 16w + (l % 16), column 16kk + 8(l / 16),
// so matrix 0 = rows 0-7 × k 0-7 (a0), 1 = rows 8-15 × k 0-7 (a1), 2 = rows 0-7 × k 8-15 (a2),
// 3 = rows 8-15 × k 8-15 (a3).
__device__ __forceinline__ void tc_afrag(unsigned (*af)[4], unsigned tile) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    const unsigned base = tile + ((16 * w + lane % 16) * TC_LD + 8 * (lane / 16)) * 2;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) ldsm_x4(af[kk], base + 32 * kk);
}

// acc (16×64) += A · tileᵀ:  acc[r][n] += Σ_k A[r][k] · tile[n][k], A (16×64) in registers
// (af[k16 step]), tile 64 rows × 64 columns in smem (the B operand is B[k][n] = tile[n][k]:
// rows of the tile, read along the row: plain ldmatrix).
// Per n8 tile j and half h of k: ldmatrix.x4 of tile rows 8j..8j+7 × columns 32h..32h+31,
// lane l addressing row 8j + l % 8, column 32h + 8(l / 8). Register m of lane (g, q) then holds
// tile[8j + g][32h + 8m + 2q ..+1]: b0 (m = 0) and b1 (m = 1) of k-step 2h, b0 and b1 (m = 2, 3)
// of k-step 2h + 1.
__device__ __forceinline__ void mma_abt(float (*acc)[4], const unsigned (*af)[4], unsigned tile) {
    const int lane = threadIdx.x % 32;
    const unsigned base = tile + ((lane % 8) * TC_LD + 8 * (lane / 8)) * 2;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            unsigned bf[4];
            ldsm_x4(bf, base + (8 * j * TC_LD + 32 * h) * 2);
            mma_bf16(acc[j], af[2 * h], bf[0], bf[1]);
            mma_bf16(acc[j], af[2 * h + 1], bf[2], bf[3]);
        }
}

// acc (16×64) += A · tile:  acc[r][n] += Σ_k A[r][k] · tile[k][n], A (16×64) in registers
// (pa[k16 step]), tile 64 × 64 in smem (B[k][n] = tile[k][n]: read down the columns, so
// ldmatrix.trans). Per k-step kk and pair of n8 tiles (2jj, 2jj+1): ldmatrix.x4.trans of rows
// 16kk..16kk+15 × columns 16jj..16jj+15, lane l addressing row 16kk + l % 8 + 8((l / 8) % 2),
// column 16jj + 8(l / 16). Register m of lane (g, q) holds tile[16kk + 8(m % 2) + 2q ..+1]
// [16jj + 8(m / 2) + g]: b0 (m = 0) and b1 (m = 1) of n-tile 2jj, b0 and b1 (m = 2, 3) of 2jj+1.
__device__ __forceinline__ void mma_av(float (*acc)[4], const unsigned (*pa)[4], unsigned tile) {
    const int lane = threadIdx.x % 32;
    const unsigned base = tile + ((lane % 8 + 8 * ((lane / 8) % 2)) * TC_LD + 8 * (lane / 16)) * 2;
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int jj = 0; jj < 4; jj++) {
            unsigned bf[4];
            ldsm_x4_t(bf, base + (16 * kk * TC_LD + 16 * jj) * 2);
            mma_bf16(acc[2 * jj], pa[kk], bf[0], bf[1]);
            mma_bf16(acc[2 * jj + 1], pa[kk], bf[2], bf[3]);
        }
}

// A fragments (bf16) of a 16×64 f32 tile held as C fragments (v[n8 tile][4]): columns
// 16kk..16kk+15 are n8 tiles 2kk and 2kk+1, whose (g, 2q..2q+1) and (g+8, 2q..2q+1) elements
// are exactly a0..a3 of k-step kk.
__device__ __forceinline__ void tc_pack_a(unsigned (*pa)[4], const float (*v)[4]) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        pa[kk][0] = pack_bf16(v[2 * kk][0], v[2 * kk][1]);
        pa[kk][1] = pack_bf16(v[2 * kk][2], v[2 * kk][3]);
        pa[kk][2] = pack_bf16(v[2 * kk + 1][0], v[2 * kk + 1][1]);
        pa[kk][3] = pack_bf16(v[2 * kk + 1][2], v[2 * kk + 1][3]);
    }
}

// Writes the warp's 16×64 f32 C-fragment tile v·mul, rounded to bf16, to rows row0..row0+15
// (rows >= T skipped) of a row-major matrix (`dst` = row 0 of the head, stride `ld`), through
// the warp's 16 rows of the smem tile `stage` so that global stores are whole 16-byte chunks
// (8 lanes per 128-byte row). The caller makes sure no other warp uses those smem rows.
__device__ __forceinline__ void tc_store_rows(floatX* dst, size_t ld, int row0, int T, const float (*v)[4],
                                              float mul, floatX* stage) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    floatX* s = stage + 16 * w * TC_LD;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        *(unsigned*)(s + g * TC_LD + 8 * j + 2 * q) = pack_bf16(v[j][0] * mul, v[j][1] * mul);
        *(unsigned*)(s + (g + 8) * TC_LD + 8 * j + 2 * q) = pack_bf16(v[j][2] * mul, v[j][3] * mul);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = lane / 8 + 4 * i, c = lane % 8, t = row0 + r;
        if (t < T) *(uint4*)(dst + (size_t)t * ld + 8 * c) = *(const uint4*)(s + r * TC_LD + 8 * c);
    }
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// ---------------------------------------------------------------------------------------------
// Forward. grid (ceil(T/64), B*NH), 128 threads.
//
// Shared memory: two stages of [K tile | V tile] (4 × 9216 B = 36 KB). Q goes through stage
// 1's K buffer once, before stage 1 is first needed; its fragments stay in registers.
// __launch_bounds__(128, 4): at most 128 registers, so 4 blocks (16 warps) share an SM (139
// registers unbounded: 3 blocks, ~6% slower; no spills at 128).
// Per key tile t (keys k0 = 64t ..): S = Q·Kᵀ (raw, f32), diagonal tile masked to -inf above
// the diagonal; running max m and sum l per row, in the log2 domain of scaled scores
// (m = max_j s_ij·scale·log2 e), P = 2^(s·scale·log2 e - m), O = O·2^(m_old - m) + (P∘Z)·V.
// l is kept per lane (each lane sums its own 16 columns of a row) and summed over the quad at
// the end: the rescale factor is the same for the 4 lanes of a row, so this is exact algebra.
// lse = (m + log2 l)·ln 2 = the natural log-sum-exp of the scaled scores.
//
// Two instances: plain multi-head attention (KV = NH: V is C columns after K, as before GQA,
// which keeps this kernel within its 128 registers) and grouped-query attention (`_gqa`: the
// key/value head's own columns; one more live offset, which costs a small spill at 128).
template <bool GQA>
__device__ __forceinline__ void flash_tc_forward_impl(floatX* out, float* lse, const floatX* qkv, int T, int NH,
                                                      int KV, float p, u64 seed) {
    __shared__ __align__(128) floatX sm[4 * TC_TILE];  // [K0 | V0 | K1 | V1]
    const int C = NH * TC_HS, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    const int qb = gridDim.x - 1 - blockIdx.x;  // longest blocks first
    const int q0 = qb * 64, row0 = q0 + 16 * w + g;  // this lane's rows: row0, row0 + 8
    const size_t ld = GQA ? (size_t)(NH + 2 * KV) * TC_HS : 3 * (size_t)C;
    const floatX* qg = qkv + (size_t)b * T * ld + h * TC_HS;
    const floatX* kg = GQA ? qkv + (size_t)b * T * ld + C + h / (NH / KV) * TC_HS : qg + C;
    const floatX* vg = GQA ? kg + KV * TC_HS : qg + 2 * C;
    const unsigned s0 = smem_u32(sm);
    const float c = rsqrtf((float)TC_HS) * TC_LOG2E;  // scores → log2 domain

    tc_async_tile(s0 + 2 * TC_TILE_B, qg, ld, q0, T);  // Q → K1
    cp_async_commit();
    tc_async_tile(s0, kg, ld, 0, T);  // key tile 0 → stage 0
    tc_async_tile(s0 + TC_TILE_B, vg, ld, 0, T);
    cp_async_commit();
    cp_async_wait<1>();  // Q has landed (this thread's part) ...
    __syncthreads();     // ... and everyone's
    unsigned qf[4][4];
    tc_afrag(qf, s0 + 2 * TC_TILE_B);

    float o[8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int ntiles = qb + 1;  // key tiles 0 .. qb; tile qb is the diagonal one
    for (int t = 0; t < ntiles; t++) {
        __syncthreads();  // all warps are done with the stage about to be refilled (or with Q)
        if (t + 1 < ntiles) {
            const unsigned nxt = s0 + ((t + 1) & 1) * 2 * TC_TILE_B;
            tc_async_tile(nxt, kg, ld, 64 * (t + 1), T);
            tc_async_tile(nxt + TC_TILE_B, vg, ld, 64 * (t + 1), T);
        }
        cp_async_commit();  // (an empty group on the last tile keeps the count uniform)
        cp_async_wait<1>();
        __syncthreads();  // tile t is in smem
        const unsigned kt = s0 + (t & 1) * 2 * TC_TILE_B, vt = kt + TC_TILE_B;

        float s[8][4] = {};
        mma_abt(s, qf, kt);
        if (t == qb) {  // diagonal tile: key k0 + col > query row → -inf (this also masks every
                        // key >= T for the rows < T; rows >= T are never written)
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (8 * j + 2 * q + (e & 1) > 16 * w + g + 8 * (e >> 1)) s[j][e] = -INFINITY;
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
        float corr[2], nm[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            // Every row has a finite score in its first tile (key 0 ≤ any row), so m is finite
            // from then on and m_old - m is never -inf - -inf.
            const float mn = fmaxf(m[r], quad_max(mx[r]) * c);
            corr[r] = tc_exp2(m[r] - mn);
            m[r] = mn;
            nm[r] = -mn;
            l[r] *= corr[r];
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                s[j][e] = tc_exp2(fmaf(s[j][e], c, nm[r]));
                l[r] += s[j][e];
                o[j][e] *= corr[r];
            }
        if (p > 0.0f) {  // attention dropout (uniform branch): O takes P∘Z, l keeps P
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const u64 base = (u64)(unsigned)(bh * T + row0 + 8 * r) * T + 64 * t + 2 * q;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    s[j][2 * r] *= dropout_factor(seed, base + 8 * j, p);
                    s[j][2 * r + 1] *= dropout_factor(seed, base + 8 * j + 1, p);
                }
            }
        }
        unsigned pa[4][4];
        tc_pack_a(pa, s);
        mma_av(o, pa, vt);
    }
    cp_async_wait<0>();
    __syncthreads();  // all warps done with the stages: reuse them to stage the output
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float lr = quad_sum(l[r]);
        const int row = row0 + 8 * r;
        if (q == 0 && row < T) lse[(size_t)bh * T + row] = m[r] * TC_LN2 + logf(lr);
        const float inv = 1.0f / lr;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            o[j][2 * r] *= inv;
            o[j][2 * r + 1] *= inv;
        }
    }
    tc_store_rows(out + (size_t)b * T * C + h * TC_HS, C, q0 + 16 * w, T, o, 1.0f, sm);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    flash_tc_forward(floatX* out, float* lse, const floatX* qkv, int T, int NH, int KV, float p, u64 seed) {
    flash_tc_forward_impl<false>(out, lse, qkv, T, NH, KV, p, seed);
}
extern "C" __global__ void __launch_bounds__(128, 4)
    flash_tc_forward_gqa(floatX* out, float* lse, const floatX* qkv, int T, int NH, int KV, float p, u64 seed) {
    flash_tc_forward_impl<true>(out, lse, qkv, T, NH, KV, p, seed);
}

// D (B, NH, T) = rowsum(dout * out), f32. 8 lanes per (row, head), one 16-byte chunk (8
// values) of each operand per lane, summed over the 8 lanes with shuffles: a warp reads 4
// whole 128-byte rows of each operand. The loop runs per warp (i0 is warp-uniform) so the
// shuffles always have all 32 lanes.
extern "C" __global__ void flash_tc_delta(float* D, const floatX* dout, const floatX* out, int N, int T, int NH) {
    const size_t total = (size_t)N * NH * 8, stride = (size_t)gridDim.x * blockDim.x;
    const int lane = threadIdx.x % 32, C = NH * TC_HS;
    for (size_t i0 = blockIdx.x * (size_t)blockDim.x + (threadIdx.x & ~31u); i0 < total; i0 += stride) {
        const size_t i = i0 + lane, item = i / 8;  // item = (row n, head h)
        const int n = (int)(item / NH), h = (int)(item % NH), v = (int)(i % 8);
        float s = 0.0f;
        if (i < total) {
            const uint4 x = *(const uint4*)(dout + (size_t)n * C + h * TC_HS + 8 * v);
            const uint4 y = *(const uint4*)(out + (size_t)n * C + h * TC_HS + 8 * v);
            const unsigned xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                s += to_f((floatX)(xs[k] & 0xffffu)) * to_f((floatX)(ys[k] & 0xffffu));
                s += to_f((floatX)(xs[k] >> 16)) * to_f((floatX)(ys[k] >> 16));
            }
        }
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        s += __shfl_xor_sync(0xffffffffu, s, 4);
        if (i < total && v == 0) D[((size_t)(n / T) * NH + h) * T + n % T] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// dq for 64 query rows; needs D from flash_tc_delta. grid (ceil(T/64), B*NH), 128 threads.
// Per key tile: S = Q·Kᵀ, dP = dO·Vᵀ, P = 2^(S·scale·log2 e - lse·log2 e) (masked on the
// diagonal tile), dS = P∘(dP∘Z - D), dq += dS·K; dq·scale at the end.
// Shared memory as in the forward: [K0 | V0 | K1 | V1], Q and dO passing through stage 1
// once; their fragments stay in registers. __launch_bounds__(128, 3): at most 168 registers,
// 3 blocks per SM (180 registers unbounded: 2 blocks, ~6% slower; no spills at 168).
extern "C" __global__ void __launch_bounds__(128, 3)
    flash_tc_backward_dq(floatX* dqkv, const float* D, const floatX* dout, const floatX* qkv, const float* lse,
                         int T, int NH, int KV, float p, u64 seed) {
    __shared__ __align__(128) floatX sm[4 * TC_TILE];
    const int C = NH * TC_HS, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int kd = C + (h / (NH / KV) - h) * TC_HS, vd = kd + KV * TC_HS;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    const int qb = gridDim.x - 1 - blockIdx.x;  // longest blocks first
    const int q0 = qb * 64, row0 = q0 + 16 * w + g;
    const size_t ld = (size_t)(NH + 2 * KV) * TC_HS;
    const floatX* qg = qkv + (size_t)b * T * ld + h * TC_HS;
    const unsigned s0 = smem_u32(sm);
    const float scale = rsqrtf((float)TC_HS), c = scale * TC_LOG2E;

    tc_async_tile(s0 + 2 * TC_TILE_B, qg, ld, q0, T);                                    // Q → K1
    tc_async_tile(s0 + 3 * TC_TILE_B, dout + (size_t)b * T * C + h * TC_HS, C, q0, T);  // dO → V1
    cp_async_commit();
    tc_async_tile(s0, qg + kd, ld, 0, T);
    tc_async_tile(s0 + TC_TILE_B, qg + vd, ld, 0, T);
    cp_async_commit();
    float nl[2], di[2];  // -lse·log2 e and D of this lane's two rows
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = row0 + 8 * r;
        // (32-bit index, < B·NH·T: a 64-bit one was kept live for the dropout index and spilled)
        nl[r] = row < T ? -lse[(unsigned)(bh * T + row)] * TC_LOG2E : 0.0f;
        di[r] = row < T ? D[(unsigned)(bh * T + row)] : 0.0f;
    }
    cp_async_wait<1>();
    __syncthreads();
    unsigned qf[4][4], yf[4][4];
    tc_afrag(qf, s0 + 2 * TC_TILE_B);
    tc_afrag(yf, s0 + 3 * TC_TILE_B);

    float dq[8][4] = {};
    const int ntiles = qb + 1;
    for (int t = 0; t < ntiles; t++) {
        __syncthreads();
        if (t + 1 < ntiles) {
            const unsigned nxt = s0 + ((t + 1) & 1) * 2 * TC_TILE_B;
            tc_async_tile(nxt, qg + kd, ld, 64 * (t + 1), T);
            tc_async_tile(nxt + TC_TILE_B, qg + vd, ld, 64 * (t + 1), T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const unsigned kt = s0 + (t & 1) * 2 * TC_TILE_B, vt = kt + TC_TILE_B;

        float s[8][4] = {}, dp[8][4] = {};
        mma_abt(s, qf, kt);
        mma_abt(dp, yf, vt);
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[j][e] = tc_exp2(fmaf(s[j][e], c, nl[e >> 1]));  // P
        if (t == qb) {  // diagonal tile: P = 0 above the diagonal (keys >= T included)
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (8 * j + 2 * q + (e & 1) > 16 * w + g + 8 * (e >> 1)) s[j][e] = 0.0f;
        }
        if (p > 0.0f) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const u64 base = (u64)(unsigned)(bh * T + row0 + 8 * r) * T + 64 * t + 2 * q;
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int x = 0; x < 2; x++) dp[j][2 * r + x] *= dropout_factor(seed, base + 8 * j + x, p);
            }
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[j][e] *= dp[j][e] - di[e >> 1];  // dS
        unsigned pa[4][4];
        tc_pack_a(pa, s);
        mma_av(dq, pa, kt);  // dq[r][d] += Σ_k dS[r][k] · K[k][d]
    }
    cp_async_wait<0>();
    __syncthreads();
    tc_store_rows(dqkv + (size_t)b * T * ld + h * TC_HS, ld, q0 + 16 * w, T, dq, scale, sm);
}

// ---------------------------------------------------------------------------------------------
// dk, dv for 64 key rows of one key/value head. grid (ceil(T/64), B*KV), 128 threads.
// The block sweeps the query tiles of each query head of its group in turn (head-major, a
// fixed order: deterministic), summing into the same dk, dv registers.
// Per query tile (queries i0 = j0 + 64t .. ; the transposed products, keys as rows):
// Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ = 2^(Sᵀ·scale·log2 e - lse_col·log2 e), dv += (P∘Z)ᵀ·dO,
// dSᵀ = Pᵀ∘(dPᵀ∘Zᵀ - D_col), dk += dSᵀ·Q; dk·scale at the end.
// Shared memory: two stages of [Q tile | dO tile] plus lse and D of the tile's 64 queries;
// K and V pass through stage 1 once.
extern "C" __global__ void __launch_bounds__(128)
    flash_tc_backward_dkdv(floatX* dqkv, const float* D, const floatX* dout, const floatX* qkv, const float* lse,
                           int T, int NH, int KV, float p, u64 seed) {
    __shared__ __align__(128) floatX sm[4 * TC_TILE];  // [Q0 | dO0 | Q1 | dO1]
    __shared__ __align__(16) float sl[2][64], sd[2][64];  // lse, D per stage
    const int C = NH * TC_HS, bkv = blockIdx.y, b = bkv / KV, kh = bkv % KV, group = NH / KV;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    const int j0 = blockIdx.x * 64, key0 = j0 + 16 * w + g;  // this lane's keys: key0, key0 + 8
    const size_t ld = (size_t)(NH + 2 * KV) * TC_HS;
    const floatX* rows = qkv + (size_t)b * T * ld;          // row 0 of this batch row
    const floatX* kg = rows + C + kh * TC_HS;               // this block's k (v: KV·HS further)
    const floatX* yrows = dout + (size_t)b * T * C;
    const unsigned s0 = smem_u32(sm);
    const float scale = rsqrtf((float)TC_HS), c = scale * TC_LOG2E;
    const int tid = threadIdx.x;
    const int ntiles = (T - j0 + 63) / 64;  // query tiles j0, j0+64, .. < T, per query head
    // Starts the loads of step `it` (query head kh·group + it / ntiles, query tile
    // j0 + 64·(it % ntiles)) into a stage: Q, dO, and lse, D (one 4-byte copy per thread;
    // zeros past T).
    auto load_tile = [&](int stage, int it) {
        const int h = kh * group + it / ntiles, i0 = j0 + 64 * (it % ntiles);
        const unsigned st = s0 + stage * 2 * TC_TILE_B;
        tc_async_tile(st, rows + h * TC_HS, ld, i0, T);
        tc_async_tile(st + TC_TILE_B, yrows + h * TC_HS, C, i0, T);
        const size_t bh = (size_t)b * NH + h;
        const int r = tid % 64, row = min(i0 + r, T - 1);
        if (tid < 64) cp_async4(smem_u32(&sl[stage][r]), lse + bh * T + row, i0 + r < T);
        else cp_async4(smem_u32(&sd[stage][r]), D + bh * T + row, i0 + r < T);
    };

    tc_async_tile(s0 + 2 * TC_TILE_B, kg, ld, j0, T);                // K → Q1
    tc_async_tile(s0 + 3 * TC_TILE_B, kg + KV * TC_HS, ld, j0, T);  // V → dO1
    cp_async_commit();
    load_tile(0, 0);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    unsigned kf[4][4], vf[4][4];
    tc_afrag(kf, s0 + 2 * TC_TILE_B);
    tc_afrag(vf, s0 + 3 * TC_TILE_B);

    float dk[8][4] = {}, dv[8][4] = {};
    const int steps = group * ntiles;
    for (int it = 0; it < steps; it++) {
        const int t = it % ntiles, i0 = j0 + 64 * t, bh = b * NH + kh * group + it / ntiles;
        __syncthreads();
        if (it + 1 < steps) load_tile((it + 1) & 1, it + 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const unsigned qt = s0 + (it & 1) * 2 * TC_TILE_B, yt = qt + TC_TILE_B;
        const float* ls = sl[it & 1];
        const float* dsv = sd[it & 1];

        float st[8][4] = {}, dpt[8][4] = {};
        mma_abt(st, kf, qt);   // Sᵀ: keys × queries
        mma_abt(dpt, vf, yt);  // dPᵀ before dropout
        // Pᵀ from the column (query) statistics: this lane's columns are 8j + 2q, 8j + 2q + 1.
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float2 lv = *(const float2*)(ls + 8 * j + 2 * q);
            const float nl0 = -lv.x * TC_LOG2E, nl1 = -lv.y * TC_LOG2E;
            st[j][0] = tc_exp2(fmaf(st[j][0], c, nl0));
            st[j][1] = tc_exp2(fmaf(st[j][1], c, nl1));
            st[j][2] = tc_exp2(fmaf(st[j][2], c, nl0));
            st[j][3] = tc_exp2(fmaf(st[j][3], c, nl1));
        }
        // Masks: the diagonal tile (query < key) and a partial last tile (query >= T; those
        // columns have zero Q, dO, lse and D and would contribute exactly 0 anyway).
        if (t == 0 || i0 + 64 > T) {
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int col = i0 + 8 * j + 2 * q + (e & 1), key = key0 + 8 * (e >> 1);
                    if (col < key || col >= T) st[j][e] = 0.0f;
                }
        }
        // dSᵀ = Pᵀ∘(dPᵀ∘Zᵀ - D) into dpt; then st becomes (P∘Z)ᵀ.
        if (p > 0.0f) {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float2 dd = *(const float2*)(dsv + 8 * j + 2 * q);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int col = i0 + 8 * j + 2 * q + (e & 1), key = key0 + 8 * (e >> 1);
                    const float z = dropout_factor(seed, (u64)(unsigned)(bh * T + col) * T + key, p);
                    dpt[j][e] = st[j][e] * (dpt[j][e] * z - ((e & 1) ? dd.y : dd.x));
                    st[j][e] *= z;
                }
            }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float2 dd = *(const float2*)(dsv + 8 * j + 2 * q);
#pragma unroll
                for (int e = 0; e < 4; e++) dpt[j][e] = st[j][e] * (dpt[j][e] - ((e & 1) ? dd.y : dd.x));
            }
        }
        unsigned pa[4][4];
        tc_pack_a(pa, st);
        mma_av(dv, pa, yt);  // dv[key][d] += Σ_i (P∘Z)ᵀ[key][i] · dO[i][d]
        tc_pack_a(pa, dpt);
        mma_av(dk, pa, qt);  // dk[key][d] += Σ_i dSᵀ[key][i] · Q[i][d]
    }
    cp_async_wait<0>();
    __syncthreads();
    floatX* dst = dqkv + (size_t)b * T * ld + C + kh * TC_HS;
    tc_store_rows(dst, ld, j0 + 16 * w, T, dk, scale, sm);
    tc_store_rows(dst + KV * TC_HS, ld, j0 + 16 * w, T, dv, 1.0f, sm + 64 * TC_LD);
}

#endif  // FERRO_BF16
