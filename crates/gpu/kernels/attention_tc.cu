// The fused attention of attention.cu on the tensor cores (bf16 builds, head size 64):
// same layouts, same math, same outputs (out, lse, D, dqkv), FlashAttention-2's schedule.
//
// A block is 4 warps; each warp owns 16 rows of a 64-row block (queries in the forward and dq
// kernels, keys in the dk/dv kernel) and sweeps 64-column tiles (keys, or queries) held in
// shared memory. Products are mma.sync.m16n8k16 (bf16 in, f32 accumulate); the warp's
// 16×64 score tile stays in registers, and its probabilities are re-packed in registers as
// the A operand of the next product (the C-fragment layout of two n8 tiles is the A-fragment
// layout of one k16 step). Softmax, masking, dropout and every statistic are f32.
#if FERRO_BF16

#define TC_HS 64
#define TC_LD 72  // shared-memory row stride in bf16 (64 + 8: conflict-free fragment loads)

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    return (unsigned)from_f(lo) | ((unsigned)from_f(hi) << 16);
}

__device__ __forceinline__ void mma_bf16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// acc (16×64) += A (16×64, fragments af[k16 step][4]) · tileᵀ, tile (64 rows × 64) in smem:
// acc[r][c] = Σ_d A[r][d] · tile[c][d].
__device__ __forceinline__ void mma_abt(float (*acc)[4], const unsigned (*af)[4], const floatX* tile) {
    const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const floatX* row = tile + (8 * j + g) * TC_LD + 2 * q;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const unsigned b0 = *(const unsigned*)(row + 16 * kk);
            const unsigned b1 = *(const unsigned*)(row + 16 * kk + 8);
            mma_bf16(acc[j], af[kk], b0, b1);
        }
    }
}

// acc (16×64) += P (16×64, f32 values p[n8 tile][4] in C-fragment layout) · tile (64 × 64):
// acc[r][d] = Σ_k P[r][k] · tile[k][d]. P is rounded to bf16.
__device__ __forceinline__ void mma_pv(float (*acc)[4], const float (*p)[4], const floatX* tile) {
    const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        unsigned a[4];
        a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
        a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
        a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
        const floatX* col = tile + (16 * kk + 2 * q) * TC_LD + g;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const floatX* c = col + 8 * j;
            const unsigned b0 = (unsigned)c[0] | ((unsigned)c[TC_LD] << 16);
            const unsigned b1 = (unsigned)c[8 * TC_LD] | ((unsigned)c[9 * TC_LD] << 16);
            mma_bf16(acc[j], a, b0, b1);
        }
    }
}

// Loads 64 rows [r0, r0+64) of `part` (0 q, 1 k, 2 v) of head h into a smem tile (zeros past T);
// 16-byte copies by all 128 threads.
__device__ __forceinline__ void tc_load_qkv(floatX* tile, const floatX* qkv, int b, int h, int part,
                                            int r0, int T, int C) {
    for (int e = threadIdx.x; e < 64 * 8; e += blockDim.x) {
        const int r = e / 8, v = e % 8, t = r0 + r;
        uint4 x = make_uint4(0, 0, 0, 0);
        if (t < T) x = *(const uint4*)(qkv + ((size_t)b * T + t) * 3 * C + part * C + h * TC_HS + v * 8);
        *(uint4*)(tile + r * TC_LD + v * 8) = x;
    }
}
// The same for a (B, T, C) tensor (out, dout).
__device__ __forceinline__ void tc_load_btc(floatX* tile, const floatX* x, int b, int h, int r0, int T, int C) {
    for (int e = threadIdx.x; e < 64 * 8; e += blockDim.x) {
        const int r = e / 8, v = e % 8, t = r0 + r;
        uint4 y = make_uint4(0, 0, 0, 0);
        if (t < T) y = *(const uint4*)(x + ((size_t)b * T + t) * C + h * TC_HS + v * 8);
        *(uint4*)(tile + r * TC_LD + v * 8) = y;
    }
}

// A fragments of the warp's 16 rows of a smem tile (rows 16w..16w+15).
__device__ __forceinline__ void tc_afrag(unsigned (*af)[4], const floatX* tile) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    const floatX* r0 = tile + (16 * w + g) * TC_LD + 2 * q;
    const floatX* r1 = r0 + 8 * TC_LD;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        af[kk][0] = *(const unsigned*)(r0 + 16 * kk);
        af[kk][1] = *(const unsigned*)(r1 + 16 * kk);
        af[kk][2] = *(const unsigned*)(r0 + 16 * kk + 8);
        af[kk][3] = *(const unsigned*)(r1 + 16 * kk + 8);
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

// grid (ceil(T/64), B*NH), 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    flash_tc_forward(floatX* out, float* lse, const floatX* qkv, int T, int NH, float p, u64 seed) {
    __shared__ __align__(16) floatX ks[64 * TC_LD], vs[64 * TC_LD];
    const int C = NH * TC_HS, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    const int q0 = blockIdx.x * 64;
    const int row[2] = {q0 + 16 * w + g, q0 + 16 * w + g + 8};
    const float scale = rsqrtf((float)TC_HS);
    unsigned qf[4][4];
    tc_load_qkv(ks, qkv, b, h, 0, q0, T, C);  // Q through the K buffer once
    __syncthreads();
    tc_afrag(qf, ks);
    float o[8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int last = min(q0 + 64, T);
    for (int k0 = 0; k0 < last; k0 += 64) {
        __syncthreads();
        tc_load_qkv(ks, qkv, b, h, 1, k0, T, C);
        tc_load_qkv(vs, qkv, b, h, 2, k0, T, C);
        __syncthreads();
        float s[8][4] = {};
        mma_abt(s, qf, ks);
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = k0 + 8 * j + 2 * q + (e & 1), r = e >> 1;
                s[j][e] = (col <= row[r] && col < T) ? s[j][e] * scale : -INFINITY;
                mx[r] = fmaxf(mx[r], s[j][e]);
            }
        float corr[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const float mn = fmaxf(m[r], quad_max(mx[r]));
            corr[r] = __expf(m[r] - mn);
            m[r] = mn;
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                const float pe = __expf(s[j][e] - m[r]);
                sum[r] += pe;
                const int col = k0 + 8 * j + 2 * q + (e & 1);
                s[j][e] = pe * dropout_factor(seed, ((u64)bh * T + row[r]) * T + col, p);
                o[j][e] *= corr[r];
            }
#pragma unroll
        for (int r = 0; r < 2; r++) l[r] = l[r] * corr[r] + quad_sum(sum[r]);
        mma_pv(o, s, vs);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (row[r] >= T) continue;
        const float inv = 1.0f / l[r];
        floatX* dst = out + ((size_t)b * T + row[r]) * C + h * TC_HS + 2 * q;
#pragma unroll
        for (int j = 0; j < 8; j++)
            *(unsigned*)(dst + 8 * j) = pack_bf16(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
        if (q == 0) lse[(size_t)bh * T + row[r]] = m[r] + logf(l[r]);
    }
}

// D (B, NH, T) = rowsum(dout * out), f32. One thread per (row, head), 16-byte loads.
extern "C" __global__ void flash_tc_delta(float* D, const floatX* dout, const floatX* out, int N, int T, int NH) {
    FOR_EACH(i, (size_t)N * NH) {
        const int n = (int)(i / NH), h = (int)(i % NH), C = NH * TC_HS;
        const floatX* a = dout + (size_t)n * C + h * TC_HS;
        const floatX* o = out + (size_t)n * C + h * TC_HS;
        float s = 0.0f, av[VEC], ov[VEC];
#pragma unroll
        for (int d = 0; d < TC_HS; d += VEC) {
            ld_vec(av, a + d);
            ld_vec(ov, o + d);
#pragma unroll
            for (int k = 0; k < VEC; k++) s += av[k] * ov[k];
        }
        D[((size_t)(n / T) * NH + h) * T + n % T] = s;
    }
}

// dq for 64 query rows; needs D from flash_tc_delta. grid (ceil(T/64), B*NH), 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    flash_tc_backward_dq(floatX* dqkv, const float* D, const floatX* dout, const floatX* qkv, const float* lse,
                         int T, int NH, float p, u64 seed) {
    __shared__ __align__(16) floatX ks[64 * TC_LD], vs[64 * TC_LD];
    const int C = NH * TC_HS, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    const int q0 = blockIdx.x * 64;
    const int row[2] = {q0 + 16 * w + g, q0 + 16 * w + g + 8};
    const float scale = rsqrtf((float)TC_HS);
    unsigned qf[4][4], yf[4][4];
    tc_load_qkv(ks, qkv, b, h, 0, q0, T, C);
    tc_load_btc(vs, dout, b, h, q0, T, C);
    __syncthreads();
    tc_afrag(qf, ks);
    tc_afrag(yf, vs);
    float li[2], di[2];
    for (int r = 0; r < 2; r++) {
        li[r] = row[r] < T ? lse[(size_t)bh * T + row[r]] : 0.0f;
        di[r] = row[r] < T ? D[(size_t)bh * T + row[r]] : 0.0f;
    }
    float dq[8][4] = {};
    const int last = min(q0 + 64, T);
    for (int k0 = 0; k0 < last; k0 += 64) {
        __syncthreads();
        tc_load_qkv(ks, qkv, b, h, 1, k0, T, C);
        tc_load_qkv(vs, qkv, b, h, 2, k0, T, C);
        __syncthreads();
        float s[8][4] = {}, dp[8][4] = {};
        mma_abt(s, qf, ks);
        mma_abt(dp, yf, vs);
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = k0 + 8 * j + 2 * q + (e & 1), r = e >> 1;
                const bool ok = col <= row[r] && col < T && row[r] < T;
                const float pe = ok ? __expf(s[j][e] * scale - li[r]) : 0.0f;
                const float z = dropout_factor(seed, ((u64)bh * T + row[r]) * T + col, p);
                s[j][e] = pe * (dp[j][e] * z - di[r]);  // dS
            }
        mma_pv(dq, s, ks);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (row[r] >= T) continue;
        floatX* dst = dqkv + ((size_t)b * T + row[r]) * 3 * C + h * TC_HS + 2 * q;
#pragma unroll
        for (int j = 0; j < 8; j++)
            *(unsigned*)(dst + 8 * j) = pack_bf16(dq[j][2 * r] * scale, dq[j][2 * r + 1] * scale);
    }
}

// dk, dv for 64 key rows. grid (ceil(T/64), B*NH), 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    flash_tc_backward_dkdv(floatX* dqkv, const float* D, const floatX* dout, const floatX* qkv, const float* lse,
                           int T, int NH, float p, u64 seed) {
    __shared__ __align__(16) floatX qs[64 * TC_LD], ys[64 * TC_LD];
    __shared__ float ls[64], ds_[64];
    const int C = NH * TC_HS, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
    const int j0 = blockIdx.x * 64;
    const int key[2] = {j0 + 16 * w + g, j0 + 16 * w + g + 8};
    const float scale = rsqrtf((float)TC_HS);
    unsigned kf[4][4], vf[4][4];
    tc_load_qkv(qs, qkv, b, h, 1, j0, T, C);
    tc_load_qkv(ys, qkv, b, h, 2, j0, T, C);
    __syncthreads();
    tc_afrag(kf, qs);
    tc_afrag(vf, ys);
    float dk[8][4] = {}, dv[8][4] = {};
    for (int i0 = j0; i0 < T; i0 += 64) {
        __syncthreads();
        tc_load_qkv(qs, qkv, b, h, 0, i0, T, C);
        tc_load_btc(ys, dout, b, h, i0, T, C);
        for (int r = threadIdx.x; r < 64; r += blockDim.x) {
            const int t = i0 + r;
            ls[r] = t < T ? lse[(size_t)bh * T + t] : 0.0f;
            ds_[r] = t < T ? D[(size_t)bh * T + t] : 0.0f;
        }
        __syncthreads();
        float st[8][4] = {}, dpt[8][4] = {};
        mma_abt(st, kf, qs);   // Sᵀ: keys × queries
        mma_abt(dpt, vf, ys);  // dPᵀ before dropout
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = 8 * j + 2 * q + (e & 1), col = i0 + c, r = e >> 1;
                const bool ok = key[r] <= col && col < T && key[r] < T;
                const float pe = ok ? __expf(st[j][e] * scale - ls[c]) : 0.0f;
                const float z = dropout_factor(seed, ((u64)bh * T + col) * T + key[r], p);
                st[j][e] = pe * z;                          // (P∘Z)ᵀ for dV
                dpt[j][e] = pe * (dpt[j][e] * z - ds_[c]);  // dSᵀ for dK
            }
        mma_pv(dv, st, ys);
        mma_pv(dk, dpt, qs);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (key[r] >= T) continue;
        floatX* dst = dqkv + ((size_t)b * T + key[r]) * 3 * C + h * TC_HS + 2 * q;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            *(unsigned*)(dst + C + 8 * j) = pack_bf16(dk[j][2 * r] * scale, dk[j][2 * r + 1] * scale);
            *(unsigned*)(dst + 2 * C + 8 * j) = pack_bf16(dv[j][2 * r], dv[j][2 * r + 1]);
        }
    }
}

#endif  // FERRO_BF16
