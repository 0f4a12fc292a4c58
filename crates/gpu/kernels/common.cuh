// Shared by every kernel of the GPU model (the loader pastes it in front of the other files;
// NVRTC sees one source string per activation type).
//
// floatX is the type of activations, activation gradients and the working copy of the weights:
// `float` for --dtype fp32, bf16 bits (`unsigned short`) for --dtype bf16, chosen by the
// FERRO_BF16 macro at compile time. Arithmetic is always f32: load with to_f, store with from_f
// (round to nearest even). Master weights, their gradients, optimizer moments and every
// reduction stay f32. No CUDA header is needed.
#if FERRO_BF16
typedef unsigned short floatX;
__device__ __forceinline__ float to_f(floatX v) { return __uint_as_float(((unsigned)v) << 16); }
__device__ __forceinline__ floatX from_f(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (floatX)0x7fc0;  // NaN stays NaN
    return (floatX)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#else
typedef float floatX;
__device__ __forceinline__ float to_f(floatX v) { return v; }
__device__ __forceinline__ floatX from_f(float f) { return f; }
#endif

typedef unsigned long long u64;

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// Grid-stride loop over n elements.
#define FOR_EACH(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// Counter-based random bits (splitmix64 of seed and index): dropout masks are recomputed in
// the backward pass from (seed, index) instead of being stored.
__device__ __forceinline__ unsigned rand_bits(u64 seed, u64 idx) {
    u64 z = seed + (idx + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (unsigned)((z ^ (z >> 31)) >> 32);
}

// Dropout factor of element `idx`: 0 with probability p, else 1/(1-p). p = 0: always 1.
__device__ __forceinline__ float dropout_factor(u64 seed, u64 idx, float p) {
    if (p <= 0.0f) return 1.0f;
    const float u = (rand_bits(seed, idx) >> 8) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
    return u < p ? 0.0f : 1.0f / (1.0f - p);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. Fixed order, so deterministic. `scratch` holds 32 floats.
__device__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
__device__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// 16-byte vectors: VEC elements of floatX (8 bf16 or 4 f32). The host keeps every row length
// a multiple of 8 (C = NH·HS with HS a multiple of 8) and every buffer 256-byte aligned.
constexpr int VEC = 16 / (int)sizeof(floatX);

__device__ __forceinline__ void ld_vec(float* f, const floatX* p) {
    const uint4 u = *(const uint4*)p;
    const floatX* e = (const floatX*)&u;
#pragma unroll
    for (int k = 0; k < VEC; k++) f[k] = to_f(e[k]);
}
__device__ __forceinline__ void st_vec(floatX* p, const float* f) {
    uint4 u;
    floatX* e = (floatX*)&u;
#pragma unroll
    for (int k = 0; k < VEC; k++) e[k] = from_f(f[k]);
    *(uint4*)p = u;
}

// 2-D launch over (rows, columns in vectors): blocks of (vector columns × rows); each thread
// owns one vector column and walks rows (the host's `rows_grid` sizes the launch).
#define FOR_ROWS(r, rows) \
    for (int r = blockIdx.y * blockDim.y + threadIdx.y; r < (rows); r += gridDim.y * blockDim.y)
