// Rung 3, smem-tiled: 16×16 tiles of A and B staged in workgroup memory.
//
// C (m×n) = A (m×k) · B (k×n), row-major, contiguous; f32 in, f32 accumulation.
// A workgroup of 16×16 invocations owns a 16×16 tile of C. For each 16-deep slice of k, every
// invocation copies one element of A's tile and one of B's into workgroup memory (zeros past
// the edges of A and B), the workgroup waits at a barrier, and each invocation takes 16
// multiply-adds from workgroup memory. Each element of A and B is read from memory once per
// workgroup instead of once per invocation: 16× less memory traffic, two workgroup-memory
// loads per multiply-add.

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;        // (m, k)
@group(0) @binding(1) var<storage, read> b: array<f32>;        // (k, n)
@group(0) @binding(2) var<storage, read_write> c: array<f32>;  // (m, n)
@group(0) @binding(3) var<uniform> dims: Dims;

const TILE: u32 = 16u;

var<workgroup> tile_a: array<f32, 256>;  // (TILE, TILE): rows of C × slice of k
var<workgroup> tile_b: array<f32, 256>;  // (TILE, TILE): slice of k × columns of C

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.y * TILE + lid.y;
    let col = wg.x * TILE + lid.x;
    var acc = 0.0;
    // The loop bound is uniform (dims), so every invocation reaches both barriers.
    for (var k0 = 0u; k0 < dims.k; k0 += TILE) {
        let pa = k0 + lid.x;
        var av = 0.0;
        if (row < dims.m && pa < dims.k) {
            av = a[row * dims.k + pa];
        }
        tile_a[lid.y * TILE + lid.x] = av;
        let pb = k0 + lid.y;
        var bv = 0.0;
        if (pb < dims.k && col < dims.n) {
            bv = b[pb * dims.n + col];
        }
        tile_b[lid.y * TILE + lid.x] = bv;
        workgroupBarrier();
        for (var p = 0u; p < TILE; p++) {
            acc += tile_a[lid.y * TILE + p] * tile_b[p * TILE + lid.x];
        }
        workgroupBarrier();
    }
    if (row < dims.m && col < dims.n) {
        c[row * dims.n + col] = acc;
    }
}
