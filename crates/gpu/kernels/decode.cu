// Decoding with a key/value cache: B sequences at once (each its own length), new positions
// appended one a sequence at a time (a prompt all at once). The caches of a layer are B slabs
// of `rows` (maxT) rows of keys and of values, (B, maxT, KV·HS) in floatX, the rows of qkv's k
// and v heads (q and k already rotated with rotary positions).
// A decoding step reads its tokens and positions from the device (`step` = B pairs {token,
// pos}, row b's at step[2b], step[2b + 1]), so that one captured CUDA graph serves every
// position.

// Rows [0, n) of qkv (n, W), W = (NH + 2·KV)·HS → cache rows [pos0, pos0 + n) of kc and vc
// (one sequence's slab: a prompt); with `step` (a decoding step, n = B) row b goes to sequence
// b's slab (b · rows rows further on) at position step[2b + 1] instead.
extern "C" __global__ void kv_append(floatX* kc, floatX* vc, const floatX* qkv, int n, int pos0, int NH, int KV,
                                     int HS, const int* step, int rows) {
    const int kvw = KV * HS, W = (NH + 2 * KV) * HS;
    FOR_EACH(i, (size_t)n * kvw) {
        const int r = (int)(i / kvw), c = (int)(i % kvw);
        const floatX* row = qkv + (size_t)r * W + NH * HS;
        const size_t at = step ? (size_t)r * rows + step[2 * r + 1] : (size_t)(pos0 + r);
        kc[at * kvw + c] = row[c];
        vc[at * kvw + c] = row[kvw + c];
    }
}

// out (B, C): row b = wte[step[2b], :] (+ wpe[step[2b + 1], :]), each new token's embedding at
// its position.
extern "C" __global__ void embed_step(floatX* out, const int* step, const floatX* wte, const floatX* wpe, int B,
                                      int C) {
    FOR_EACH(i, (size_t)B * C) {
        const int b = (int)(i / C), c = (int)(i % C);
        const int tok = step[2 * b], pos = step[2 * b + 1];
        float x = to_f(wte[(size_t)tok * C + c]);
        if (wpe) x += to_f(wpe[(size_t)pos * C + c]);
        out[i] = from_f(x);
    }
}

#define DECODE_MAX_T 4096
#define DECODE_THREADS 256

// out (B, NH·HS): row b = attention of qkv's row b's query (its q heads) over sequence b's
// cache rows 0 .. len-1, len = step[2b + 1] + 1 (the new position's own key and value
// included), query head h reading key/value head h / (NH / KV). grid (NH, B), block
// DECODE_THREADS; HS ≤ 128, len ≤ rows ≤ DECODE_MAX_T.
// Scores: one warp per key (lanes over dimensions, coalesced); softmax over the block in f32;
// the weighted sum of values: thread (group, d) sums every (threads / HS)-th key of dimension
// d, the groups' partials summed in a fixed order (deterministic).
extern "C" __global__ void __launch_bounds__(DECODE_THREADS)
    attn_decode(floatX* out, const floatX* qkv, const floatX* kc, const floatX* vc, const int* step, int NH, int KV,
                int HS, int rows) {
    const int b = blockIdx.y, len = step[2 * b + 1] + 1;
    qkv += (size_t)b * (NH + 2 * KV) * HS;
    out += (size_t)b * NH * HS;
    kc += (size_t)b * rows * KV * HS;
    vc += (size_t)b * rows * KV * HS;
    __shared__ float sc[DECODE_MAX_T], part[DECODE_THREADS], qs[128], scratch[32];
    const int h = blockIdx.x, kvw = KV * HS, col = (h / (NH / KV)) * HS;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = DECODE_THREADS / 32;
    const float scale = rsqrtf((float)HS);
    for (int d = tid; d < HS; d += DECODE_THREADS) qs[d] = to_f(qkv[h * HS + d]) * scale;
    __syncthreads();
    for (int j = warp; j < len; j += warps) {
        const floatX* k = kc + (size_t)j * kvw + col;
        float a = 0.0f;
        for (int d = lane; d < HS; d += 32) a += qs[d] * to_f(k[d]);
        a = warp_sum(a);
        if (lane == 0) sc[j] = a;
    }
    __syncthreads();
    float m = -INFINITY;
    for (int j = tid; j < len; j += DECODE_THREADS) m = fmaxf(m, sc[j]);
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int j = tid; j < len; j += DECODE_THREADS) {
        const float e = __expf(sc[j] - m);
        sc[j] = e;
        s += e;
    }
    s = block_sum(s, scratch);  // (its barriers also order the sc writes before the reads below)
    const int groups = DECODE_THREADS / HS, d = tid % HS, grp = tid / HS;
    float acc = 0.0f;
    if (grp < groups)
        for (int j = grp; j < len; j += groups) acc += sc[j] * to_f(vc[(size_t)j * kvw + col + d]);
    part[tid] = acc;
    __syncthreads();
    if (tid < HS) {
        float o = 0.0f;
        for (int g = 0; g < groups; g++) o += part[g * HS + tid];
        out[h * HS + tid] = from_f(o / s);
    }
}
