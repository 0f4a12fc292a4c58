// The LM head on a slice of the vocabulary: out (m, nc) = x[a_off..] (m, k) · wᵀ for rows
// r0..r0+nc of w (a chunk of the tied token embedding, (rows, k) row-major). 16×16 tiles;
// both operands are read along k.
struct P { m: u32, nc: u32, k: u32, r0: u32, a_off: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

var<workgroup> ta: array<f32, 256>;
var<workgroup> tw: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.y * 16u + lid.y;
    let col = wg.x * 16u + lid.x;
    // The invocation (ly, lx) stages x[wg.y*16 + ly][k0 + lx] and w[wg.x*16 + ly][k0 + lx].
    let wrow = wg.x * 16u + lid.y;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + 16u) {
        let kk0 = k0 + lid.x;
        var va = 0.0;
        if (row < p.m && kk0 < p.k) {
            va = x[p.a_off + row * p.k + kk0];
        }
        ta[lid.y * 16u + lid.x] = va;
        var vw = 0.0;
        if (wrow < p.nc && kk0 < p.k) {
            vw = w[(p.r0 + wrow) * p.k + kk0];
        }
        tw[lid.y * 16u + lid.x] = vw;
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            acc = fma(ta[lid.y * 16u + kk], tw[lid.x * 16u + kk], acc);
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.nc) {
        out[row * p.nc + col] = acc;
    }
}
