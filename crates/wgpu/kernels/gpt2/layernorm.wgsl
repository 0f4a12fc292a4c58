// out (rows, C) = (x - mean) · rstd · w + b per row, rstd = 1/sqrt(var + eps), var biased.
// One workgroup of 256 invocations per row; sums reduced through workgroup memory (core WGSL
// has no subgroup shuffles).
struct P { rows: u32, c: u32, eps: f32, pad: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;          // (rows, C)
@group(0) @binding(1) var<storage, read> w: array<f32>;          // (C)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // (C)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (rows, C)
@group(0) @binding(4) var<uniform> p: P;

var<workgroup> red: array<f32, 256>;

fn reduce_sum(l: u32) -> f32 {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (l < s) {
            red[l] = red[l] + red[l + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let base = wg.x * p.c;
    var s = 0.0;
    for (var i = l; i < p.c; i = i + 256u) {
        s = s + x[base + i];
    }
    red[l] = s;
    let mean = reduce_sum(l) / f32(p.c);
    var v = 0.0;
    for (var i = l; i < p.c; i = i + 256u) {
        let d = x[base + i] - mean;
        v = v + d * d;
    }
    red[l] = v;
    let rstd = inverseSqrt(reduce_sum(l) / f32(p.c) + p.eps);
    for (var i = l; i < p.c; i = i + 256u) {
        out[base + i] = (x[base + i] - mean) * rstd * w[i] + b[i];
    }
}
