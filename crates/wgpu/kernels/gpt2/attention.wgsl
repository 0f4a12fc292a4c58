// Causal attention of rows (positions pos0..pos0+rows) over the cached keys and values:
// for query row r and head h, s_j = q·k_j · scale for j ≤ pos0 + r, p = softmax(s),
// out[r, h·HS..] = Σ_j p_j v_j. One workgroup of 64 invocations per (row, head); the scores
// live in a global scratch buffer (rows, NH, maxT), so the context is not bounded by
// workgroup memory; max and sum reduced through workgroup memory.
struct P { rows: u32, c: u32, nh: u32, hs: u32, maxt: u32, pos0: u32, scale: f32, pad: u32 }

@group(0) @binding(0) var<storage, read> qkv: array<f32>;          // (rows, 3C)
@group(0) @binding(1) var<storage, read> kc: array<f32>;           // (NH, maxT, HS)
@group(0) @binding(2) var<storage, read> vc: array<f32>;           // (NH, maxT, HS)
@group(0) @binding(3) var<storage, read_write> scores: array<f32>; // (rows, NH, maxT)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // (rows, C)
@group(0) @binding(5) var<uniform> p: P;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let r = wg.x;
    let h = wg.y;
    let n = p.pos0 + r + 1u;
    let q = r * 3u * p.c + h * p.hs;
    let s0 = (r * p.nh + h) * p.maxt;
    let kv = h * p.maxt * p.hs;
    var mx = -3.0e38;
    for (var j = l; j < n; j = j + 64u) {
        var s = 0.0;
        for (var d = 0u; d < p.hs; d = d + 1u) {
            s = fma(qkv[q + d], kc[kv + j * p.hs + d], s);
        }
        s = s * p.scale;
        scores[s0 + j] = s;
        mx = max(mx, s);
    }
    red[l] = mx;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st = st >> 1u) {
        if (l < st) {
            red[l] = max(red[l], red[l + st]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = l; j < n; j = j + 64u) {
        let e = exp(scores[s0 + j] - m);
        scores[s0 + j] = e;
        sum = sum + e;
    }
    red[l] = sum;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st = st >> 1u) {
        if (l < st) {
            red[l] = red[l] + red[l + st];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    // Every invocation's exponentials written before any is read.
    storageBarrier();
    workgroupBarrier();
    for (var d = l; d < p.hs; d = d + 64u) {
        var o = 0.0;
        for (var j = 0u; j < n; j = j + 1u) {
            o = fma(scores[s0 + j], vc[kv + j * p.hs + d], o);
        }
        out[r * p.c + h * p.hs + d] = o * inv;
    }
}
