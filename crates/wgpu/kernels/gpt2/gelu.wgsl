// x = 0.5·x·(1 + tanh(s·(x + 0.044715·x³))), s = sqrt(2/π), in place (GPT-2's gelu_new).
// The argument of tanh is clamped to ±15 (tanh is ±1 there in f32): some drivers compute tanh
// through exp and overflow to NaN for large arguments.
struct P { len: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> p: P;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= p.len) {
        return;
    }
    let v = x[i];
    let u = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    x[i] = 0.5 * v * (1.0 + tanh(u));
}
