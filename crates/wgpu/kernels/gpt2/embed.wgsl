// x (rows, C) = wte[tokens[r]] + wpe[pos0 + r % T] for the tokens inside this chunk of the
// vocabulary (rows v0..v1 of wte, stored as their own buffer); other rows are left alone
// (another chunk's dispatch writes them).
struct P { rows: u32, c: u32, t: u32, pos0: u32, v0: u32, v1: u32, pad0: u32, pad1: u32 }

@group(0) @binding(0) var<storage, read> tokens: array<u32>;   // (rows)
@group(0) @binding(1) var<storage, read> wte: array<f32>;      // (v1 - v0, C)
@group(0) @binding(2) var<storage, read> wpe: array<f32>;      // (maxT, C)
@group(0) @binding(3) var<storage, read_write> x: array<f32>;  // (rows, C)
@group(0) @binding(4) var<uniform> p: P;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= p.rows * p.c) {
        return;
    }
    let r = i / p.c;
    let ch = i % p.c;
    let tok = tokens[r];
    if (tok < p.v0 || tok >= p.v1) {
        return;
    }
    let pos = p.pos0 + r % p.t;
    x[i] = wte[(tok - p.v0) * p.c + ch] + wpe[pos * p.c + ch];
}
