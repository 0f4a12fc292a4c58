// Copies the keys and values of rows (positions pos0..pos0+rows) from qkv (rows, 3C) into the
// layer's cache, (NH, maxT, HS) each.
struct P { rows: u32, c: u32, hs: u32, maxt: u32, pos0: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> kc: array<f32>;
@group(0) @binding(2) var<storage, read_write> vc: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= p.rows * p.c) {
        return;
    }
    let r = i / p.c;
    let ch = i % p.c;
    let h = ch / p.hs;
    let d = ch % p.hs;
    let dst = (h * p.maxt + p.pos0 + r) * p.hs + d;
    kc[dst] = qkv[r * 3u * p.c + p.c + ch];
    vc[dst] = qkv[r * 3u * p.c + 2u * p.c + ch];
}
