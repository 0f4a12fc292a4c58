// Token + position embedding, forward and backward, with the embedding dropout fused.
// Without a position table (rotary positions: wpe null) only the token embedding.
//
// forward:  out[b,t,:] = drop(wte[tok[b,t],:] + wpe[t,:])           out (B,T,C) floatX
// backward: dwte[v,:] += Σ_{(b,t): tok=v} drop'(dout[b,t,:])          f32, accumulated
//           dwpe[t,:] += Σ_b drop'(dout[b,t,:])
// The wte backward is deterministic without atomics: the host sorts the positions by token
// (`order`), and one block sums each distinct token's rows in that order.

extern "C" __global__ void encoder_forward(floatX* out, const int* tok, const floatX* wte,
                                           const floatX* wpe, int N, int T, int C, float p, u64 seed) {
    FOR_EACH(i, (size_t)N * C) {
        const int n = (int)(i / C), c = (int)(i % C);
        float x = to_f(wte[(size_t)tok[n] * C + c]);
        if (wpe) x += to_f(wpe[(size_t)(n % T) * C + c]);
        out[i] = from_f(x * dropout_factor(seed, i, p));
    }
}

// grid (U, ceil(C/256)); bucket u holds positions order[starts[u] .. starts[u+1]], token utok[u].
extern "C" __global__ void encoder_backward_wte(float* dwte, const floatX* dout, const int* order,
                                                const int* starts, const int* utok, int C, float p,
                                                u64 seed) {
    const int u = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float g = 0.0f;
    for (int k = starts[u]; k < starts[u + 1]; k++) {
        const size_t i = (size_t)order[k] * C + c;
        g += to_f(dout[i]) * dropout_factor(seed, i, p);
    }
    dwte[(size_t)utok[u] * C + c] += g;
}

extern "C" __global__ void encoder_backward_wpe(float* dwpe, const floatX* dout, int B, int T, int C,
                                                float p, u64 seed) {
    FOR_EACH(j, (size_t)T * C) {
        float g = 0.0f;
        for (int b = 0; b < B; b++) {
            const size_t i = (size_t)b * T * C + j;
            g += to_f(dout[i]) * dropout_factor(seed, i, p);
        }
        dwpe[j] += g;
    }
}
