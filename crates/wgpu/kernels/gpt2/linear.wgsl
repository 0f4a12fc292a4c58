// out (m, n) = a (m, k) · w (k, n) + bias (n), or out += that (flags bit 0: the residual add);
// w in GPT-2's Conv1D layout (in, out), row-major. 16×16 tiles of a and w staged in workgroup
// memory, one element of out per invocation, zeros read past the edges.
struct P { m: u32, n: u32, k: u32, flags: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: P;

var<workgroup> ta: array<f32, 256>;
var<workgroup> tw: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.y * 16u + lid.y;
    let col = wg.x * 16u + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + 16u) {
        let ka = k0 + lid.x;
        var va = 0.0;
        if (row < p.m && ka < p.k) {
            va = a[row * p.k + ka];
        }
        ta[lid.y * 16u + lid.x] = va;
        let kw = k0 + lid.y;
        var vw = 0.0;
        if (kw < p.k && col < p.n) {
            vw = w[kw * p.n + col];
        }
        tw[lid.y * 16u + lid.x] = vw;
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            acc = fma(ta[lid.y * 16u + kk], tw[kk * 16u + lid.x], acc);
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.n) {
        var v = acc + bias[col];
        if ((p.flags & 1u) != 0u) {
            v = v + out[row * p.n + col];
        }
        out[row * p.n + col] = v;
    }
}
