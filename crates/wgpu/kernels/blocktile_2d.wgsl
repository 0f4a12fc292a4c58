// Rung 4, blocktile-2d: a 128×128 tile of C per workgroup, an 8×8 sub-tile per invocation.
//
// C (m×n) = A (m×k) · B (k×n), row-major, contiguous; f32 in, f32 accumulation.
// 256 invocations, seen as a 16×16 grid (tx, ty). For each 8-deep slice of k the workgroup
// stages A's 128×8 tile (transposed, so that a column of it is contiguous) and B's 8×128 tile
// in workgroup memory, four elements of each per invocation, zeros past the edges. Then, per
// step p of the slice, each invocation loads 8 values of A's column and 8 of B's row into
// registers and does their outer product: 64 multiply-adds for 16 workgroup-memory loads
// (rung 3: 2 loads per multiply-add). Invocation (tx, ty) owns rows ty·8 + i and columns
// tx + 16·j of the tile: the 16 invocations of a row of the grid read 16 consecutive words of
// B's tile (no bank conflicts) and write 16 consecutive elements of C.

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;        // (m, k)
@group(0) @binding(1) var<storage, read> b: array<f32>;        // (k, n)
@group(0) @binding(2) var<storage, read_write> c: array<f32>;  // (m, n)
@group(0) @binding(3) var<uniform> dims: Dims;

const BM: u32 = 128u;  // rows of C per workgroup
const BN: u32 = 128u;  // columns of C per workgroup
const BK: u32 = 8u;    // depth of one slice of k
const TM: u32 = 8u;    // rows of C per invocation
const TN: u32 = 8u;    // columns of C per invocation

var<workgroup> tile_a: array<f32, 1024>;  // (BK, BM): tile_a[p * BM + r] = A[row0 + r][k0 + p]
var<workgroup> tile_b: array<f32, 1024>;  // (BK, BN): tile_b[p * BN + j] = B[k0 + p][col0 + j]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let tx = t % 16u;
    let ty = t / 16u;
    var acc: array<f32, 64>;  // (TM, TN), zero-initialised
    var ra: array<f32, 8>;
    var rb: array<f32, 8>;
    for (var k0 = 0u; k0 < dims.k; k0 += BK) {
        // Stage the tiles: 1024 elements each, 4 per invocation.
        for (var l = 0u; l < 4u; l++) {
            let e = t + l * 256u;
            let r = e / BK;  // A: 8 invocations per row of the tile
            let pa = e % BK;
            var av = 0.0;
            if (row0 + r < dims.m && k0 + pa < dims.k) {
                av = a[(row0 + r) * dims.k + k0 + pa];
            }
            tile_a[pa * BM + r] = av;
            let pb = e / BN;  // B: 128 invocations per row of the tile
            let j = e % BN;
            var bv = 0.0;
            if (k0 + pb < dims.k && col0 + j < dims.n) {
                bv = b[(k0 + pb) * dims.n + col0 + j];
            }
            tile_b[pb * BN + j] = bv;
        }
        workgroupBarrier();
        for (var p = 0u; p < BK; p++) {
            for (var i = 0u; i < TM; i++) {
                ra[i] = tile_a[p * BM + ty * TM + i];
            }
            for (var j = 0u; j < TN; j++) {
                rb[j] = tile_b[p * BN + tx + 16u * j];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] += ra[i] * rb[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let r = row0 + ty * TM + i;
        for (var j = 0u; j < TN; j++) {
            let col = col0 + tx + 16u * j;
            if (r < dims.m && col < dims.n) {
                c[r * dims.n + col] = acc[i * TN + j];
            }
        }
    }
}
