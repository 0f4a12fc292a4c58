// head.wgsl's contract for a few rows (m ≤ 4: decoding): out (m, nc) = x[a_off..] (m, k) · wᵀ
// for rows r0..r0+nc of w. One workgroup of 64 invocations per row of w (a column of out):
// the invocations read consecutive elements of that row (coalesced), each keeps m partial sums
// (a vec4), and the workgroup adds them up through workgroup memory. The 16×16 tiles of
// head.wgsl would compute 16 rows of x for the one that exists.
struct P { m: u32, nc: u32, k: u32, r0: u32, a_off: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

var<workgroup> red: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
) {
    let col = wg.y * nw.x + wg.x;
    let valid = col < p.nc;
    // Rows past m read row 0 again (always there) and are never written.
    let r1 = select(0u, 1u, p.m > 1u) * p.k;
    let r2 = select(0u, 2u, p.m > 2u) * p.k;
    let r3 = select(0u, 3u, p.m > 3u) * p.k;
    var acc = vec4<f32>(0.0);
    if (valid) {
        let row = (p.r0 + col) * p.k;
        for (var i = l; i < p.k; i = i + 64u) {
            let a = p.a_off + i;
            let xv = vec4<f32>(x[a], x[a + r1], x[a + r2], x[a + r3]);
            acc = fma(xv, vec4<f32>(w[row + i]), acc);
        }
    }
    red[l] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (l < s) {
            red[l] = red[l] + red[l + s];
        }
        workgroupBarrier();
    }
    if (valid && l == 0u) {
        let total = red[0];
        for (var r = 0u; r < p.m; r = r + 1u) {
            out[r * p.nc + col] = total[r];
        }
    }
}
