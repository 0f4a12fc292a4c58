// linear.wgsl's contract for a few rows (m ≤ 4: decoding): out (m, n) = a (m, k) · w (k, n) +
// bias, or out += that (flags bit 0). One invocation per column of out, a loop over k for all
// m rows at once: neighbouring invocations read neighbouring elements of w's rows (one
// transaction per subgroup), w is read once, no workgroup memory or barriers, and no tile rows
// wasted on rows that do not exist (the 16×16 tiles of linear.wgsl compute 16 rows for one).
struct P { m: u32, n: u32, k: u32, flags: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: P;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let col = g.x;
    if (col >= p.n) {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < p.k; i = i + 1u) {
        let wv = w[i * p.n + col];
        // Rows past m read row 0 again (always there) and are never written.
        let r1 = select(0u, 1u, p.m > 1u);
        let r2 = select(0u, 2u, p.m > 2u);
        let r3 = select(0u, 3u, p.m > 3u);
        let av = vec4<f32>(a[i], a[r1 * p.k + i], a[r2 * p.k + i], a[r3 * p.k + i]);
        acc = fma(av, vec4<f32>(wv), acc);
    }
    for (var r = 0u; r < p.m; r = r + 1u) {
        var v = acc[r] + bias[col];
        if ((p.flags & 1u) != 0u) {
            v = v + out[r * p.n + col];
        }
        out[r * p.n + col] = v;
    }
}
