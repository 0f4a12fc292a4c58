// Rotary position embedding (RoPE) on the packed qkv, in place, forward and backward in one
// kernel. HF Llama's "rotate half" pairing: in a head of HS = 2·H2 values, element i and
// element i + H2 (i < H2) turn by the angle θ = pos · inv_freq[i]:
//
//   forward:   x[i]' = x[i]·cos θ − x[i+H2]·sin θ,   x[i+H2]' = x[i+H2]·cos θ + x[i]·sin θ
//   backward:  the same with sin θ → −sin θ (the inverse rotation, its transpose), on dq, dk.
//
// qkv (N, W) rows [q heads (NH) | k heads (KV) | v heads (KV)], W = (NH + 2·KV)·HS: the first
// NH + KV heads turn, the values stay. Row n is at position n % T (or pos_at[2n]). cos, sin (maxT, H2) f32, made
// once on the host from the config's inverse frequencies (Llama 3 scaling included) in f64.
// Arithmetic f32; each thread turns 4 adjacent pairs (H2 is a multiple of 4: HS of 8).
// (A pass rather than inside the attention kernels: see model/mod.rs.)

struct __align__(4 * sizeof(floatX)) x4_t {
    floatX e[4];
};

// pos_at: null, or (decoding, T = 1) the device ints holding the rows' positions, row n's at
// pos_at[2n] (the `step` pairs of decode.cu, from their second int).
extern "C" __global__ void rope(floatX* qkv, const float* cos, const float* sin, int N, int T, int heads, int HS,
                                int W, float sign, const int* pos_at) {
    const unsigned H2 = HS / 2, quads = H2 / 4;
    FOR_EACH(i, (size_t)N * heads * quads) {
        const unsigned k = (unsigned)(i % quads) * 4;
        const size_t nh = i / quads;
        const unsigned head = (unsigned)(nh % heads);
        const size_t n = nh / heads;
        const unsigned pos = pos_at ? (unsigned)pos_at[2 * n] : (unsigned)(n % T);
        floatX* x = qkv + n * W + head * HS + k;
        const float4 c = *(const float4*)(cos + pos * H2 + k);
        const float4 s4 = *(const float4*)(sin + pos * H2 + k);
        const float cs[4] = {c.x, c.y, c.z, c.w}, sn[4] = {sign * s4.x, sign * s4.y, sign * s4.z, sign * s4.w};
        x4_t lo = *(const x4_t*)x, hi = *(const x4_t*)(x + H2);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float x1 = to_f(lo.e[e]), x2 = to_f(hi.e[e]);
            lo.e[e] = from_f(x1 * cs[e] - x2 * sn[e]);
            hi.e[e] = from_f(x2 * cs[e] + x1 * sn[e]);
        }
        *(x4_t*)x = lo;
        *(x4_t*)(x + H2) = hi;
    }
}
