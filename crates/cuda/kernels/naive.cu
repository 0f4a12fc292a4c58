// Rung 1, naive: one thread per element of C, a dot product over K read from global memory.
// threadIdx.x walks down a *column* of C, so the 32 threads of a warp read 32 different rows
// of A (32 cache lines) and write 32 strided elements of C: uncoalesced on purpose, the
// starting point of the ladder.
extern "C" __global__ void sgemm_naive(int M, int N, int K, const float* __restrict__ A,
                                       const float* __restrict__ B, float* __restrict__ C) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    const int col = blockIdx.y * blockDim.y + threadIdx.y;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int p = 0; p < K; ++p) acc += A[(size_t)row * K + p] * B[(size_t)p * N + col];
        C[(size_t)row * N + col] = acc;
    }
}
