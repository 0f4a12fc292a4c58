//! `core::wide` compiles the elementwise loops for AVX-512 where the CPU has it. The ops'
//! per-element arithmetic must not change with the vector width: GELU through the op (wide)
//! against the same formula in a plain loop here (built for the workspace's baseline target),
//! bit for bit, on random inputs of an odd length.

use ferrogpt_core::ops::{gelu, Write};
use ferrogpt_core::Float;

fn inputs(n: usize) -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 12.0
        })
        .collect()
}

#[test]
fn gelu_is_bit_identical_to_a_plain_loop() {
    let n = 40_009; // above the ops' parallel threshold, not a multiple of any vector width
    let x = inputs(n);
    let (mut out, mut th) = (vec![0f32; n], vec![0f32; n]);
    gelu::forward(&mut out, &mut th, &x);
    let (s, k, half) = (0.797_884_6_f32, 0.044715f32, 0.5f32);
    for (i, &x) in x.iter().enumerate() {
        let u = s * (x + k * x * x * x);
        let t = Float::tanh(u); // ferrogpt's tanh, not the inherent (libm) one
        let o = half * x * (1.0 + t);
        assert_eq!(th[i].to_bits(), t.to_bits(), "tanh at {i} (x = {x})");
        assert_eq!(out[i].to_bits(), o.to_bits(), "gelu at {i} (x = {x})");
    }
    // The backward pass, overwrite mode.
    let dout = inputs(n + 1)[1..].to_vec();
    let mut dx = vec![0f32; n];
    gelu::backward(Write::Set, &mut dx, &x, &th, &dout);
    let three_k = (3.0 * 0.044715f64) as f32;
    for i in 0..n {
        let (x, t, g) = (x[i], th[i], dout[i]);
        let sech2 = 1.0 - t * t;
        let local = half * (1.0 + t) + half * x * sech2 * s * (1.0 + three_k * x * x);
        assert_eq!(
            dx[i].to_bits(),
            (g * local).to_bits(),
            "gelu backward at {i}"
        );
    }
}
