//! The attention op's fast path (every product through `matmul` at a level) against the plain
//! reference loops, on fresh random inputs of odd shapes, with and without dropout, f32 and f64,
//! at every level available here (`amx` within bf16 tolerance; skipped where the CPU lacks it).

use ferrogpt_core::ops::attention::{self, Dims};
use ferrogpt_core::ops::dropout::draw_mask;
use ferrogpt_core::ops::Write;
use ferrogpt_core::{Float, Level};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

fn rand_vec<T: Float>(rng: &mut Rng64, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f64(rng.gen::<f64>() * 2.0 - 1.0))
        .collect()
}

/// max |a - b| / max |b|.
fn rel<T: Float>(a: &[T], b: &[T]) -> f64 {
    let scale = b
        .iter()
        .fold(0f64, |m, x| m.max(x.to_f64().abs()))
        .max(1e-30);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((x.to_f64() - y.to_f64()).abs()))
        / scale
}

fn compare<T: Float>(level: Level, d: Dims, dropout: f64, seed: u64, tol: f64) {
    let mut rng = Rng64::seed_from_u64(seed);
    let (b, t, c, nh) = (d.b, d.t, d.c, d.nh);
    // Inputs of order 2 so the softmax is far from uniform.
    let qkv: Vec<T> = rand_vec::<T>(&mut rng, b * t * 3 * c)
        .into_iter()
        .map(|x| x * T::from_f64(2.0))
        .collect();
    let dout: Vec<T> = rand_vec(&mut rng, b * t * c);
    let mask = (dropout > 0.0).then(|| {
        let mut m = vec![T::ZERO; b * nh * t * t];
        draw_mask(&mut m, dropout, &mut rng);
        m
    });
    let mask = mask.as_deref();
    let (mut out_r, mut att_r) = (vec![T::ZERO; b * t * c], vec![T::ZERO; b * nh * t * t]);
    attention::forward_reference(&mut out_r, &mut att_r, &qkv, mask, d);
    // Garbage in the outputs: the fast path must overwrite them.
    let (mut out, mut att) = (
        vec![T::from_f64(7.0); b * t * c],
        vec![T::from_f64(7.0); b * nh * t * t],
    );
    attention::forward(level, &mut out, &mut att, &qkv, mask, d).unwrap();
    let what = format!(
        "{level} {} {d:?} dropout {dropout}",
        std::any::type_name::<T>()
    );
    let (e_out, e_att) = (rel(&out, &out_r), rel(&att, &att_r));
    assert!(
        e_out < tol && e_att < tol,
        "{what}: forward out {e_out:.2e} att {e_att:.2e}"
    );
    // Accumulating: start both from the same non-zero gradient.
    let base: Vec<T> = rand_vec(&mut rng, b * t * 3 * c);
    let (mut g_r, mut g) = (base.clone(), base);
    attention::backward_reference(&mut g_r, &dout, &qkv, &att_r, mask, d);
    attention::backward(level, Write::Add, &mut g, &dout, &qkv, &att_r, mask, d).unwrap();
    let e = rel(&g, &g_r);
    assert!(e < tol, "{what}: backward {e:.2e}");
    // Overwriting: garbage in, the reference's gradient from zero out.
    let mut g_r = vec![T::ZERO; b * t * 3 * c];
    attention::backward_reference(&mut g_r, &dout, &qkv, &att_r, mask, d);
    let mut g = vec![T::from_f64(7.0); b * t * 3 * c];
    attention::backward(level, Write::Set, &mut g, &dout, &qkv, &att_r, mask, d).unwrap();
    let e = rel(&g, &g_r);
    assert!(e < tol, "{what}: backward (overwrite) {e:.2e}");
}

const SHAPES: [(usize, usize, usize, usize); 6] = [
    // (B, T, NH, HS)
    (1, 1, 1, 8),
    (2, 7, 3, 5),
    (3, 33, 2, 16),
    (1, 64, 4, 32),
    (2, 70, 3, 24),
    (1, 129, 2, 64),
];

fn each_shape(mut f: impl FnMut(Dims, u64)) {
    for (i, &(b, t, nh, hs)) in SHAPES.iter().enumerate() {
        f(
            Dims {
                b,
                t,
                c: nh * hs,
                nh,
            },
            i as u64,
        );
    }
}

#[test]
fn every_exact_level_matches_the_reference_f32_and_f64() {
    for level in Level::available_levels().into_iter().filter(|l| l.exact()) {
        each_shape(|d, seed| {
            for dropout in [0.0, 0.25] {
                compare::<f32>(level, d, dropout, seed, 2e-5);
                compare::<f64>(level, d, dropout, seed, 1e-12);
            }
        });
    }
}

#[test]
fn amx_matches_the_reference_within_bf16() {
    if let Err(e) = Level::Amx.available() {
        eprintln!("skipped: {e}");
        return;
    }
    each_shape(|d, seed| {
        for dropout in [0.0, 0.25] {
            compare::<f32>(Level::Amx, d, dropout, seed, 3e-2);
        }
    });
}
