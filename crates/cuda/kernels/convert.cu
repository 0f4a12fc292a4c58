// f32 → bf16 (raw bits), round to nearest even; NaN stays NaN. Used to make the bf16 operands
// of the tensor-core rung and of cuBLAS bf16 from the same f32 matrices.
extern "C" __global__ void f32_to_bf16(const float* __restrict__ x, unsigned short* __restrict__ y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const unsigned u = __float_as_uint(x[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) { y[i] = 0x7fc0; continue; }
        y[i] = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}
