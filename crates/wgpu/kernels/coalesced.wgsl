// Rung 2, coalesced: the naive loop with global_invocation_id.x along a ROW of C.
//
// C (m×n) = A (m×k) · B (k×n), row-major, contiguous; f32 in, f32 accumulation.
// Neighbouring invocations now share their element of A (one load, broadcast) and read
// neighbouring elements of B and write neighbouring elements of C: one memory transaction per
// subgroup where the naive rung needed one per invocation. Every multiply-add still loads its
// two operands from memory (the caches).

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;        // (m, k)
@group(0) @binding(1) var<storage, read> b: array<f32>;        // (k, n)
@group(0) @binding(2) var<storage, read_write> c: array<f32>;  // (m, n)
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (row >= dims.m || col >= dims.n) {
        return;
    }
    var acc = 0.0;
    for (var p = 0u; p < dims.k; p++) {
        acc += a[row * dims.k + p] * b[p * dims.n + col];
    }
    c[row * dims.n + col] = acc;
}
