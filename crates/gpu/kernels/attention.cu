// Causal multi-head self-attention, fused ("flash"): tiled over keys with an online softmax,
// so the (B, NH, T, T) matrix never exists. Forward and backward side by side.
//
// qkv (B, T, W) as the qkv linear writes it, W = (NH + 2·KV)·HS: row (b,t) = [q heads (NH) |
// k heads (KV) | v heads (KV)], HS columns each; query head h reads key/value head
// h / (NH/KV) (grouped-query attention; KV = NH is plain multi-head attention, W = 3C).
// out (B, T, C), C = NH·HS, heads side by side. lse (B, NH, T) f32: the log-sum-exp of each
// row of scaled scores, saved for the backward. With rotary positions, q and k arrive rotated
// (rope.cu) and dq, dk leave with respect to the rotated values.
//
//   s_ij = q_i·k_j / sqrt(HS)  (j ≤ i),  P = softmax_j(s),  out_i = Σ_j P_ij Z_ij v_j
// with Z the attention dropout (0 or 1/(1-p), from (seed, b, h, i, j)).
// Backward (FlashAttention-2's recurrences, recomputing P from lse):
//   D_i = dout_i·out_i,  dP_ij = Z_ij dout_i·v_j,  dS_ij = P_ij (dP_ij - D_i)
//   dq_i = Σ_j dS_ij k_j / sqrt(HS),  dk_j = Σ_i dS_ij q_i / sqrt(HS),  dv_j = Σ_i P_ij Z_ij dout_i
// Two kernels: dq (a block of query rows loops over key tiles; also writes D) and dk/dv (a
// block of key rows of one key/value head loops over the query heads of its group, and for
// each over query tiles, summing into the same registers in that fixed order). No atomics:
// deterministic.
//
// Threads: G threads share one row, DPT = HS/G dimensions each (dot products are reduced with
// shuffles over the G lanes); ROWS rows per block; key/query tiles of TILE rows in shared
// memory, f32. Arithmetic f32 (CUDA cores). Instantiated for HS in {8, 16, 32, 64, 128}.

#define FA_ROWS 64

template <int HS> struct Fa {
    static constexpr int DPT = HS < 16 ? HS : 16;  // dimensions per thread
    static constexpr int G = HS / DPT;             // threads per row (1..8)
    static constexpr int TILE = HS <= 64 ? 64 : 32;
    static constexpr int THREADS = FA_ROWS * G;
};

template <int G> __device__ __forceinline__ float group_sum(float v) {
    for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float attn_dropout(u64 seed, int bh, int T, int i, int j, float p) {
    return dropout_factor(seed, ((u64)bh * T + i) * T + j, p);
}

// Loads rows [r0, r0+TILE) of the HS columns from `col` of qkv (row stride W) into
// s[TILE][HS] (zeros past T).
template <int HS>
__device__ __forceinline__ void load_tile(float* s, const floatX* qkv, int b, int col, int r0, int T, int W) {
    constexpr int TILE = Fa<HS>::TILE;
    for (int e = threadIdx.x; e < TILE * HS; e += blockDim.x) {
        const int r = e / HS, d = e % HS, t = r0 + r;
        s[e] = t < T ? to_f(qkv[((size_t)b * T + t) * W + col + d]) : 0.0f;
    }
}

// grid (ceil(T/ROWS), B*NH), block Fa<HS>::THREADS
template <int HS>
__device__ void flash_forward(floatX* out, float* lse, const floatX* qkv, int T, int NH, int KV, float p,
                              u64 seed) {
    using F = Fa<HS>;
    constexpr int DPT = F::DPT, G = F::G, TILE = F::TILE;
    __shared__ float ks[TILE * HS], vs[TILE * HS];
    const int C = NH * HS, W = (NH + 2 * KV) * HS, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int kc = C + (h / (NH / KV)) * HS, vc = kc + KV * HS;  // this head's k and v columns
    const int q0 = blockIdx.x * FA_ROWS, i = q0 + threadIdx.x / G, g = threadIdx.x % G;
    const float scale = rsqrtf((float)HS);
    float q[DPT], o[DPT];
    for (int d = 0; d < DPT; d++) {
        q[d] = i < T ? to_f(qkv[((size_t)b * T + i) * W + h * HS + g * DPT + d]) * scale : 0.0f;
        o[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int last = min(q0 + FA_ROWS, T);  // keys needed by this block: 0 .. last-1
    for (int k0 = 0; k0 < last; k0 += TILE) {
        __syncthreads();
        load_tile<HS>(ks, qkv, b, kc, k0, T, W);
        load_tile<HS>(vs, qkv, b, vc, k0, T, W);
        __syncthreads();
        for (int c0 = 0; c0 < TILE; c0 += 8) {  // chunks of 8 keys: one rescale per chunk
            float s[8];
            float cm = -INFINITY;
            for (int u = 0; u < 8; u++) {
                const float* kr = ks + (c0 + u) * HS + g * DPT;
                float a = 0.0f;
                for (int d = 0; d < DPT; d++) a += q[d] * kr[d];
                a = group_sum<G>(a);
                const int j = k0 + c0 + u;
                s[u] = (j <= i && j < T) ? a : -INFINITY;
                cm = fmaxf(cm, s[u]);
            }
            const float mn = fmaxf(m, cm);
            if (mn == -INFINITY) continue;  // the whole chunk is masked (rows past T)
            const float corr = __expf(m - mn);
            l *= corr;
            for (int d = 0; d < DPT; d++) o[d] *= corr;
            for (int u = 0; u < 8; u++) {
                const float e = __expf(s[u] - mn);
                l += e;
                const float w = e * attn_dropout(seed, bh, T, i, k0 + c0 + u, p);
                const float* vr = vs + (c0 + u) * HS + g * DPT;
                for (int d = 0; d < DPT; d++) o[d] += w * vr[d];
            }
            m = mn;
        }
    }
    if (i < T) {
        const float inv = 1.0f / l;
        for (int d = 0; d < DPT; d++) out[((size_t)b * T + i) * C + h * HS + g * DPT + d] = from_f(o[d] * inv);
        if (g == 0) lse[(size_t)bh * T + i] = m + logf(l);
    }
}

// dq of a block of query rows; also D (B, NH, T). dqkv's q part is overwritten.
template <int HS>
__device__ void flash_backward_dq(floatX* dqkv, float* D, const floatX* dout, const floatX* out,
                                  const floatX* qkv, const float* lse, int T, int NH, int KV, float p,
                                  u64 seed) {
    using F = Fa<HS>;
    constexpr int DPT = F::DPT, G = F::G, TILE = F::TILE;
    __shared__ float ks[TILE * HS], vs[TILE * HS];
    const int C = NH * HS, W = (NH + 2 * KV) * HS, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int kc = C + (h / (NH / KV)) * HS, vc = kc + KV * HS;
    const int q0 = blockIdx.x * FA_ROWS, i = q0 + threadIdx.x / G, g = threadIdx.x % G;
    const float scale = rsqrtf((float)HS);
    float q[DPT], dq[DPT], dy[DPT];
    float di = 0.0f;
    const size_t orow = ((size_t)b * T + i) * C + h * HS + g * DPT;
    for (int d = 0; d < DPT; d++) {
        q[d] = i < T ? to_f(qkv[((size_t)b * T + i) * W + h * HS + g * DPT + d]) * scale : 0.0f;
        dy[d] = i < T ? to_f(dout[orow + d]) : 0.0f;
        di += i < T ? dy[d] * to_f(out[orow + d]) : 0.0f;
        dq[d] = 0.0f;
    }
    di = group_sum<G>(di);
    const float li = i < T ? lse[(size_t)bh * T + i] : 0.0f;
    const int last = min(q0 + FA_ROWS, T);
    for (int k0 = 0; k0 < last; k0 += TILE) {
        __syncthreads();
        load_tile<HS>(ks, qkv, b, kc, k0, T, W);
        load_tile<HS>(vs, qkv, b, vc, k0, T, W);
        __syncthreads();
        for (int u = 0; u < TILE; u++) {
            const float* kr = ks + u * HS + g * DPT;
            const float* vr = vs + u * HS + g * DPT;
            float a = 0.0f, dp = 0.0f;
            for (int d = 0; d < DPT; d++) {
                a += q[d] * kr[d];
                dp += dy[d] * vr[d];
            }
            a = group_sum<G>(a);
            dp = group_sum<G>(dp);
            const int j = k0 + u;
            if (j > i || i >= T) continue;
            const float pij = __expf(a - li);
            const float ds = pij * (dp * attn_dropout(seed, bh, T, i, j, p) - di);
            for (int d = 0; d < DPT; d++) dq[d] += ds * kr[d];
        }
    }
    if (i < T) {
        for (int d = 0; d < DPT; d++)
            dqkv[((size_t)b * T + i) * W + h * HS + g * DPT + d] = from_f(dq[d] * scale);
        if (g == 0) D[(size_t)bh * T + i] = di;
    }
}

// dk, dv of a block of key rows of one key/value head (run after flash_backward_dq, which
// writes D): grid (ceil(T/ROWS), B*KV). The block sums over the NH/KV query heads of its group,
// in order. dqkv's k and v parts are overwritten.
template <int HS>
__device__ void flash_backward_dkdv(floatX* dqkv, const float* D, const floatX* dout, const floatX* qkv,
                                    const float* lse, int T, int NH, int KV, float p, u64 seed) {
    using F = Fa<HS>;
    constexpr int DPT = F::DPT, G = F::G, TILE = F::TILE;
    __shared__ float qs[TILE * HS], dys[TILE * HS], ls[TILE], ds_[TILE];
    const int C = NH * HS, W = (NH + 2 * KV) * HS, bkv = blockIdx.y, b = bkv / KV, kh = bkv % KV;
    const int group = NH / KV;
    const int j0 = blockIdx.x * FA_ROWS, j = j0 + threadIdx.x / G, g = threadIdx.x % G;
    const float scale = rsqrtf((float)HS);
    float k[DPT], v[DPT], dk[DPT], dv[DPT];
    const size_t krow = ((size_t)b * T + j) * W + C + kh * HS + g * DPT;  // k; v is KV·HS further
    for (int d = 0; d < DPT; d++) {
        k[d] = j < T ? to_f(qkv[krow + d]) * scale : 0.0f;
        v[d] = j < T ? to_f(qkv[krow + KV * HS + d]) : 0.0f;
        dk[d] = 0.0f;
        dv[d] = 0.0f;
    }
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const int bh = b * NH + h;
        // Query tiles that can see any of this block's keys: i >= j0.
        for (int i0 = (j0 / TILE) * TILE; i0 < T; i0 += TILE) {
            __syncthreads();
            load_tile<HS>(qs, qkv, b, h * HS, i0, T, W);
            for (int e = threadIdx.x; e < TILE * HS; e += blockDim.x) {
                const int r = e / HS, d = e % HS, t = i0 + r;
                dys[e] = t < T ? to_f(dout[((size_t)b * T + t) * C + h * HS + d]) : 0.0f;
            }
            for (int r = threadIdx.x; r < TILE; r += blockDim.x) {
                const int t = i0 + r;
                ls[r] = t < T ? lse[(size_t)bh * T + t] : 0.0f;
                ds_[r] = t < T ? D[(size_t)bh * T + t] : 0.0f;
            }
            __syncthreads();
            for (int u = 0; u < TILE; u++) {
                const float* qr = qs + u * HS + g * DPT;
                const float* yr = dys + u * HS + g * DPT;
                float a = 0.0f, dp = 0.0f;
                for (int d = 0; d < DPT; d++) {
                    a += qr[d] * k[d];
                    dp += yr[d] * v[d];
                }
                a = group_sum<G>(a);
                dp = group_sum<G>(dp);
                const int i = i0 + u;
                if (j > i || i >= T || j >= T) continue;
                const float pij = __expf(a - ls[u]);
                const float z = attn_dropout(seed, bh, T, i, j, p);
                const float ds = pij * (dp * z - ds_[u]);
                for (int d = 0; d < DPT; d++) {
                    dv[d] += pij * z * yr[d];
                    dk[d] += ds * qr[d];
                }
            }
        }
    }
    if (j < T) {
        for (int d = 0; d < DPT; d++) {
            dqkv[krow + d] = from_f(dk[d] * scale);
            dqkv[krow + KV * HS + d] = from_f(dv[d]);
        }
    }
}

#define FLASH_INSTANCES(HS)                                                                            \
    extern "C" __global__ void __launch_bounds__(Fa<HS>::THREADS) flash_forward_##HS(                \
        floatX* out, float* lse, const floatX* qkv, int T, int NH, int KV, float p, u64 seed) {        \
        flash_forward<HS>(out, lse, qkv, T, NH, KV, p, seed);                                          \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(Fa<HS>::THREADS) flash_backward_dq_##HS(            \
        floatX* dqkv, float* D, const floatX* dout, const floatX* out, const floatX* qkv,              \
        const float* lse, int T, int NH, int KV, float p, u64 seed) {                                  \
        flash_backward_dq<HS>(dqkv, D, dout, out, qkv, lse, T, NH, KV, p, seed);                       \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(Fa<HS>::THREADS) flash_backward_dkdv_##HS(          \
        floatX* dqkv, const float* D, const floatX* dout, const floatX* qkv, const float* lse, int T, \
        int NH, int KV, float p, u64 seed) {                                                           \
        flash_backward_dkdv<HS>(dqkv, D, dout, qkv, lse, T, NH, KV, p, seed);                          \
    }

FLASH_INSTANCES(8)
FLASH_INSTANCES(16)
FLASH_INSTANCES(32)
FLASH_INSTANCES(64)
FLASH_INSTANCES(128)
