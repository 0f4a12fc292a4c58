//! The attention op's fast path (every product through `matmul` at a level) against the plain
//! reference loops, on fresh random inputs of odd shapes, with and without dropout, f32 and f64,
//! multi-head (KV = NH) and grouped-query (KV < NH), at every level available here (`amx`
//! within bf16 tolerance; skipped where the CPU lacks it).

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
    let (b, t, c, nh, w) = (d.b, d.t, d.c, d.nh, d.qkv_cols());
    // Inputs of order 2 so the softmax is far from uniform.
    let qkv: Vec<T> = rand_vec::<T>(&mut rng, b * t * w)
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
    let base: Vec<T> = rand_vec(&mut rng, b * t * w);
    let (mut g_r, mut g) = (base.clone(), base);
    attention::backward_reference(&mut g_r, &dout, &qkv, &att_r, mask, d);
    attention::backward(level, Write::Add, &mut g, &dout, &qkv, &att_r, mask, d).unwrap();
    let e = rel(&g, &g_r);
    assert!(e < tol, "{what}: backward {e:.2e}");
    // Overwriting: garbage in, the reference's gradient from zero out.
    let mut g_r = vec![T::ZERO; b * t * w];
    attention::backward_reference(&mut g_r, &dout, &qkv, &att_r, mask, d);
    let mut g = vec![T::from_f64(7.0); b * t * w];
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

/// Grouped-query shapes: several query heads per key/value head (KV = 1 is multi-query).
const GQA_SHAPES: [(usize, usize, usize, usize, usize); 6] = [
    // (B, T, NH, KV, HS)
    (1, 1, 2, 1, 8),
    (2, 7, 3, 1, 5),
    (3, 33, 4, 2, 16),
    (1, 64, 4, 1, 32),
    (2, 70, 6, 2, 24),
    (1, 129, 6, 3, 64),
];

fn each_shape(mut f: impl FnMut(Dims, u64)) {
    let mha = SHAPES.iter().map(|&(b, t, nh, hs)| (b, t, nh, nh, hs));
    for (i, (b, t, nh, kv, hs)) in mha.chain(GQA_SHAPES).enumerate() {
        f(
            Dims {
                b,
                t,
                c: nh * hs,
                nh,
                kv,
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

/// The reference itself for grouped-query attention: equal to multi-head attention on qkv with
/// each key/value head repeated for every query head of its group, and its key/value gradient
/// the sum over the group of the repeated heads' gradients.
#[test]
fn gqa_reference_is_mha_with_repeated_key_value_heads() {
    let (b, t, nh, kv, hs) = (2, 9, 6, 2, 5);
    let (c, group) = (nh * hs, nh / kv);
    let gqa = Dims { b, t, c, nh, kv };
    let mha = Dims { kv: nh, ..gqa };
    let (wg, wm) = (gqa.qkv_cols(), mha.qkv_cols());
    let mut rng = Rng64::seed_from_u64(42);
    let qkv: Vec<f64> = rand_vec(&mut rng, b * t * wg);
    let dout: Vec<f64> = rand_vec(&mut rng, b * t * c);
    // Query columns as they are; key/value head g(h) = h / group copied to head h.
    let mut rep = vec![0.0; b * t * wm];
    for (dst, src) in rep.chunks_exact_mut(wm).zip(qkv.chunks_exact(wg)) {
        dst[..c].copy_from_slice(&src[..c]);
        for h in 0..nh {
            let g = h / group;
            dst[c + h * hs..][..hs].copy_from_slice(&src[c + g * hs..][..hs]);
            dst[2 * c + h * hs..][..hs].copy_from_slice(&src[c + (kv + g) * hs..][..hs]);
        }
    }
    let (mut out_g, mut att_g) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
    attention::forward_reference(&mut out_g, &mut att_g, &qkv, None, gqa);
    let (mut out_m, mut att_m) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
    attention::forward_reference(&mut out_m, &mut att_m, &rep, None, mha);
    assert!(rel(&out_g, &out_m) < 1e-14 && rel(&att_g, &att_m) < 1e-14);
    let mut dg = vec![0.0; b * t * wg];
    attention::backward_reference(&mut dg, &dout, &qkv, &att_g, None, gqa);
    let mut dm = vec![0.0; b * t * wm];
    attention::backward_reference(&mut dm, &dout, &rep, &att_m, None, mha);
    let mut want = vec![0.0; b * t * wg];
    for (dst, src) in want.chunks_exact_mut(wg).zip(dm.chunks_exact(wm)) {
        dst[..c].copy_from_slice(&src[..c]);
        for h in 0..nh {
            let g = h / group;
            for i in 0..hs {
                dst[c + g * hs + i] += src[c + h * hs + i];
                dst[c + (kv + g) * hs + i] += src[2 * c + h * hs + i];
            }
        }
    }
    assert!(rel(&dg, &want) < 1e-13, "{:e}", rel(&dg, &want));
}
