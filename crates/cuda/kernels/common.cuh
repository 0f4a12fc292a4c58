// Shared by every kernel of the GPU matmul ladder (pasted in front of each .cu file by the
// loader, since NVRTC sees one source string).
//
// Contract of every kernel: row-major C (M×N) = A (M×K) · B (K×N), contiguous rows
// (lda = K, ldb = N, ldc = N), C overwritten. M, N, K arbitrary: `*_edge` variants check
// bounds on every load; the plain variants assume whole tiles (the host picks).
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

// A guarded load: zero outside the matrix when CHECK is set.
template <bool CHECK>
__device__ __forceinline__ float ld_or_zero(const float* __restrict__ p, int row, int col,
                                            int rows, int cols, int ld) {
    if (CHECK) return (row < rows && col < cols) ? p[(size_t)row * ld + col] : 0.0f;
    return p[(size_t)row * ld + col];
}
