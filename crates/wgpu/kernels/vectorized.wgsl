// Rung 5, vectorized (and rung 6, f16): rung 4's tiling with vec4 everywhere.
//
// C (m×n) = A (m×k) · B (k×n), row-major, contiguous; C is f32 and every product is formed and
// accumulated in f32. The element type E of A and B is set by a line the host puts in front
// of this file: `alias E = f32;` (rung 5) or `enable f16; alias E = f16;` (rung 6, which needs
// the adapter feature shader-f16: half the bytes of A and B in memory and in workgroup memory).
//
// A and B are bound as arrays of vec4<E>. 256 invocations, a 16×16 grid (tx, ty), own a
// 128×128 tile of C, each an 8×8 sub-tile: rows ty·8 + i, columns tx·4 + s and 64 + tx·4 + s.
// Per 8-deep slice of k, each invocation loads ONE vec4 of A (row t/2, k quad t%2) and ONE
// vec4 of B (k row t/32, column quad t%32) into workgroup memory, A kept row-major so that
// both tiles are stored and read as whole vec4s. Per quad of k, an invocation reads 8 vec4s of
// A (its rows) and 8 of B (2 per k), and does 64 vec4 multiply-adds: 256 multiply-adds for 16
// workgroup-memory loads, where rung 4 needed 64.
//
// Loads are whole vec4s where the row's start allows it (k % 4 == 0 for A, n % 4 == 0 for B)
// and the four elements lie inside the matrix; elsewhere (edges, odd shapes) element by
// element, zeros past the edges. The branch is the same for a whole row, so it costs little.

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<vec4<E>>;    // (m, k), padded to whole vec4s
@group(0) @binding(1) var<storage, read> b: array<vec4<E>>;    // (k, n), padded to whole vec4s
@group(0) @binding(2) var<storage, read_write> c: array<f32>;  // (m, n)
@group(0) @binding(3) var<uniform> dims: Dims;

const BM: u32 = 128u;  // rows of C per workgroup
const BN: u32 = 128u;  // columns of C per workgroup
const BK: u32 = 8u;    // depth of one slice of k

// (BM, BK/4): tile_a[r * 2 + q] = A[row0 + r][k0 + 4q .. k0 + 4q + 4]
var<workgroup> tile_a: array<vec4<E>, 256>;
// (BK, BN/4): tile_b[p * 32 + q] = B[k0 + p][col0 + 4q .. col0 + 4q + 4]
var<workgroup> tile_b: array<vec4<E>, 256>;

fn a_at(e: u32) -> E {
    return a[e >> 2u][e & 3u];
}

fn b_at(e: u32) -> E {
    return b[e >> 2u][e & 3u];
}

// A[i][p .. p + 4], zeros past the edges.
fn load_a(i: u32, p: u32) -> vec4<E> {
    var v = vec4<E>();
    if (i >= dims.m) {
        return v;
    }
    let e = i * dims.k + p;
    if (dims.k % 4u == 0u && p + 4u <= dims.k) {
        return a[e >> 2u];
    }
    if (p < dims.k) { v.x = a_at(e); }
    if (p + 1u < dims.k) { v.y = a_at(e + 1u); }
    if (p + 2u < dims.k) { v.z = a_at(e + 2u); }
    if (p + 3u < dims.k) { v.w = a_at(e + 3u); }
    return v;
}

// B[p][j .. j + 4], zeros past the edges.
fn load_b(p: u32, j: u32) -> vec4<E> {
    var v = vec4<E>();
    if (p >= dims.k) {
        return v;
    }
    let e = p * dims.n + j;
    if (dims.n % 4u == 0u && j + 4u <= dims.n) {
        return b[e >> 2u];
    }
    if (j < dims.n) { v.x = b_at(e); }
    if (j + 1u < dims.n) { v.y = b_at(e + 1u); }
    if (j + 2u < dims.n) { v.z = b_at(e + 2u); }
    if (j + 3u < dims.n) { v.w = b_at(e + 3u); }
    return v;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let tx = t % 16u;
    let ty = t / 16u;
    // acc[i * 2 + h]: row ty·8 + i, columns h·64 + tx·4 .. + 4
    var acc: array<vec4<f32>, 16>;
    var ra: array<vec4<f32>, 8>;
    for (var k0 = 0u; k0 < dims.k; k0 += BK) {
        tile_a[t] = load_a(row0 + t / 2u, k0 + (t % 2u) * 4u);
        tile_b[t] = load_b(k0 + t / 32u, col0 + (t % 32u) * 4u);
        workgroupBarrier();
        for (var q = 0u; q < BK / 4u; q++) {
            for (var i = 0u; i < 8u; i++) {
                ra[i] = vec4<f32>(tile_a[(ty * 8u + i) * 2u + q]);
            }
            for (var s = 0u; s < 4u; s++) {
                let p = q * 4u + s;
                let b0 = vec4<f32>(tile_b[p * 32u + tx]);
                let b1 = vec4<f32>(tile_b[p * 32u + 16u + tx]);
                for (var i = 0u; i < 8u; i++) {
                    let x = ra[i][s];
                    acc[i * 2u] = fma(vec4<f32>(x), b0, acc[i * 2u]);
                    acc[i * 2u + 1u] = fma(vec4<f32>(x), b1, acc[i * 2u + 1u]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let r = row0 + ty * 8u + i;
        if (r >= dims.m) {
            break;
        }
        for (var h = 0u; h < 2u; h++) {
            let v = acc[i * 2u + h];
            let j = col0 + h * 64u + tx * 4u;
            let o = r * dims.n + j;
            if (j < dims.n) { c[o] = v.x; }
            if (j + 1u < dims.n) { c[o + 1u] = v.y; }
            if (j + 2u < dims.n) { c[o + 2u] = v.z; }
            if (j + 3u < dims.n) { c[o + 3u] = v.w; }
        }
    }
}
