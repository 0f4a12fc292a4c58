// Rung 1, naive: one invocation per element of C, a dot product over k from memory.
//
// C (m×n) = A (m×k) · B (k×n), row-major, contiguous; f32 in, f32 accumulation.
// Workgroups of 16×16 invocations; global_invocation_id.x walks the ROWS of C, so neighbouring
// invocations (one subgroup) read k-long rows of A a row apart and write C a column apart:
// every step of the loop touches as many cache lines as there are invocations in a subgroup.
// That is the mistake rung 2 fixes; it is kept here on purpose, as in the CUDA ladder.

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;        // (m, k)
@group(0) @binding(1) var<storage, read> b: array<f32>;        // (k, n)
@group(0) @binding(2) var<storage, read_write> c: array<f32>;  // (m, n)
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    let col = gid.y;
    if (row >= dims.m || col >= dims.n) {
        return;
    }
    var acc = 0.0;
    for (var p = 0u; p < dims.k; p++) {
        acc += a[row * dims.k + p] * b[p * dims.n + col];
    }
    c[row * dims.n + col] = acc;
}
