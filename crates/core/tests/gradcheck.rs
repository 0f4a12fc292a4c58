//! Finite-difference gradient checks of every op, in f64, at the naive matmul level.
//!
//! For an op `out = f(inputs, params)` and a fixed random `R`, the scalar `L = Σ out ⊙ R` is
//! differentiated two ways: by the tape's backward (seeded with dL/dout = R) and by central
//! differences. Every input and parameter gradient must agree to a relative error (in the
//! 2-norm over the tensor) under 1e-6.

use ferrogpt_core::{Level, Param, Tape, Var};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

fn randn(rng: &mut Rng64, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| (rng.gen::<f64>() * 2.0 - 1.0) * scale)
        .collect()
}

/// Builds the op on a fresh tape from `inputs` (data, rows, cols) and `params`, returns its output.
type Build<'a> = &'a dyn Fn(&mut Tape<f64>, &[f64], &[Var]) -> Var;

fn run(
    build: Build,
    inputs: &[(Vec<f64>, usize, usize)],
    params: &[f64],
) -> (Tape<f64>, Vec<Var>, Var) {
    let mut tape = Tape::new(Level::Naive).unwrap();
    let vars: Vec<Var> = inputs
        .iter()
        .map(|(d, r, c)| tape.input(d, *r, *c))
        .collect();
    let out = build(&mut tape, params, &vars);
    (tape, vars, out)
}

fn loss(build: Build, inputs: &[(Vec<f64>, usize, usize)], params: &[f64], r: &[f64]) -> f64 {
    let (tape, _, out) = run(build, inputs, params);
    tape.value(out).iter().zip(r).map(|(a, b)| a * b).sum()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm: f64 =
        a.iter().map(|x| x * x).sum::<f64>().sqrt() + b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        0.0
    } else {
        diff / norm
    }
}

fn check(name: &str, build: Build, inputs: Vec<(Vec<f64>, usize, usize)>, params: Vec<f64>) {
    let mut rng = Rng64::seed_from_u64(7);
    let (mut tape, vars, out) = run(build, &inputs, &params);
    let r = randn(&mut rng, tape.value(out).len(), 1.0);
    let mut dparams = vec![0.0; params.len()];
    tape.backward_from(out, &r, &params, &mut dparams);
    let h = 1e-5;
    for (i, var) in vars.iter().enumerate() {
        let analytic = tape.grad(*var).to_vec();
        let mut numeric = vec![0.0; analytic.len()];
        for (j, nj) in numeric.iter_mut().enumerate() {
            let mut plus = inputs.clone();
            plus[i].0[j] += h;
            let mut minus = inputs.clone();
            minus[i].0[j] -= h;
            *nj = (loss(build, &plus, &params, &r) - loss(build, &minus, &params, &r)) / (2.0 * h);
        }
        let e = rel_err(&analytic, &numeric);
        assert!(e < 1e-6, "{name}: input {i} gradient relative error {e:e}");
    }
    let mut numeric = vec![0.0; params.len()];
    for j in 0..params.len() {
        let mut plus = params.clone();
        plus[j] += h;
        let mut minus = params.clone();
        minus[j] -= h;
        numeric[j] =
            (loss(build, &inputs, &plus, &r) - loss(build, &inputs, &minus, &r)) / (2.0 * h);
    }
    let e = rel_err(&dparams, &numeric);
    assert!(e < 1e-6, "{name}: parameter gradient relative error {e:e}");
    assert!(
        dparams.iter().any(|&g| g != 0.0) || params.is_empty(),
        "{name}: parameter gradient is all zero"
    );
}

fn p(offset: usize, rows: usize, cols: usize) -> Param {
    Param { offset, rows, cols }
}

#[test]
fn embedding() {
    let mut rng = Rng64::seed_from_u64(1);
    let (v, maxt, c, t) = (11, 9, 5, 7);
    let params = randn(&mut rng, v * c + maxt * c, 1.0);
    let tokens: Vec<u32> = (0..3 * t).map(|_| rng.gen_range(0..v as u32)).collect();
    let build = move |tape: &mut Tape<f64>, params: &[f64], _: &[Var]| {
        tape.embedding(params, &tokens, p(0, v, c), Some(p(v * c, maxt, c)), t)
    };
    check("embedding", &build, vec![], params);
}

#[test]
fn layernorm() {
    let mut rng = Rng64::seed_from_u64(2);
    // C = 13: the tail loop alone; C = 37: two 16-lane chunks and a tail.
    for (n, c) in [(7, 13), (5, 37)] {
        let params = randn(&mut rng, 2 * c, 1.0);
        let build = move |tape: &mut Tape<f64>, params: &[f64], x: &[Var]| {
            tape.layernorm(params, x[0], p(0, 1, c), p(c, 1, c))
        };
        check(
            &format!("layernorm C={c}"),
            &build,
            vec![(randn(&mut rng, n * c, 2.0), n, c)],
            params,
        );
    }
}

#[test]
fn linear_with_bias() {
    let mut rng = Rng64::seed_from_u64(3);
    let (n, ic, oc) = (7, 5, 9);
    let params = randn(&mut rng, ic * oc + oc, 1.0);
    let build = move |tape: &mut Tape<f64>, params: &[f64], x: &[Var]| {
        tape.linear(params, x[0], p(0, ic, oc), Some(p(ic * oc, 1, oc)), false)
    };
    check(
        "linear",
        &build,
        vec![(randn(&mut rng, n * ic, 1.0), n, ic)],
        params,
    );
}

#[test]
fn linear_transposed_no_bias() {
    let mut rng = Rng64::seed_from_u64(4);
    let (n, ic, oc) = (6, 7, 11);
    let params = randn(&mut rng, oc * ic, 1.0);
    let build = move |tape: &mut Tape<f64>, params: &[f64], x: &[Var]| {
        tape.linear(params, x[0], p(0, oc, ic), None, true)
    };
    check(
        "linear (transposed)",
        &build,
        vec![(randn(&mut rng, n * ic, 1.0), n, ic)],
        params,
    );
}

#[test]
fn attention() {
    let mut rng = Rng64::seed_from_u64(5);
    let (b, t, c, nh) = (2, 5, 6, 3);
    let build = move |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| {
        let mut r = Rng64::seed_from_u64(0);
        tape.attention(x[0], b, nh, 0.0, &mut r)
    };
    check(
        "attention",
        &build,
        vec![(randn(&mut rng, b * t * 3 * c, 1.0), b * t, 3 * c)],
        vec![],
    );
}

#[test]
fn attention_with_dropout() {
    let mut rng = Rng64::seed_from_u64(6);
    let (b, t, c, nh) = (2, 4, 4, 2);
    let build = move |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| {
        let mut r = Rng64::seed_from_u64(0); // the same mask at every evaluation
        tape.attention(x[0], b, nh, 0.3, &mut r)
    };
    check(
        "attention+dropout",
        &build,
        vec![(randn(&mut rng, b * t * 3 * c, 1.0), b * t, 3 * c)],
        vec![],
    );
}

#[test]
fn gelu() {
    let mut rng = Rng64::seed_from_u64(8);
    let build = |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| tape.gelu(x[0]);
    check(
        "gelu",
        &build,
        vec![(randn(&mut rng, 40, 3.0), 5, 8)],
        vec![],
    );
}

#[test]
fn residual_add() {
    let mut rng = Rng64::seed_from_u64(9);
    let build = |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| tape.add(x[0], x[1]);
    check(
        "add",
        &build,
        vec![
            (randn(&mut rng, 12, 1.0), 3, 4),
            (randn(&mut rng, 12, 1.0), 3, 4),
        ],
        vec![],
    );
}

#[test]
fn dropout() {
    let mut rng = Rng64::seed_from_u64(10);
    let build = |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| {
        let mut r = Rng64::seed_from_u64(0);
        tape.dropout(x[0], 0.4, &mut r)
    };
    check(
        "dropout",
        &build,
        vec![(randn(&mut rng, 30, 1.0), 5, 6)],
        vec![],
    );
}

#[test]
fn softmax_cross_entropy() {
    let mut rng = Rng64::seed_from_u64(11);
    let (n, v, vp) = (6, 7, 9); // two padding columns that must get no gradient
    let logits = randn(&mut rng, n * vp, 3.0);
    let targets: Vec<u32> = (0..n).map(|_| rng.gen_range(0..v as u32)).collect();
    let eval = |l: &[f64]| {
        let mut tape = Tape::new(Level::Naive).unwrap();
        let x = tape.input(l, n, vp);
        let loss = tape.softmax_cross_entropy(x, &targets, v);
        (tape, x, loss)
    };
    let (mut tape, x, _) = eval(&logits);
    tape.backward(&[], &mut []);
    let analytic = tape.grad(x).to_vec();
    let h = 1e-5;
    let numeric: Vec<f64> = (0..logits.len())
        .map(|j| {
            let (mut a, mut b) = (logits.clone(), logits.clone());
            a[j] += h;
            b[j] -= h;
            (eval(&a).2 - eval(&b).2) / (2.0 * h)
        })
        .collect();
    assert!(rel_err(&analytic, &numeric) < 1e-6);
    for row in analytic.chunks(vp) {
        assert!(
            row[v..].iter().all(|&g| g == 0.0),
            "padding columns got a gradient"
        );
    }
    // The loss itself against a direct computation.
    let direct: f64 = logits
        .chunks(vp)
        .zip(&targets)
        .map(|(l, &y)| {
            let l = &l[..v];
            let lse = l.iter().map(|x| x.exp()).sum::<f64>().ln();
            lse - l[y as usize]
        })
        .sum::<f64>()
        / n as f64;
    assert!((eval(&logits).2 - direct).abs() < 1e-12);
}

/// A small stack of ops, as the model composes them: gradients flow through several nodes and
/// fan-out (x is used by the residual and by the branch).
#[test]
fn composed_block() {
    let mut rng = Rng64::seed_from_u64(12);
    let (b, t, c, nh) = (2, 3, 4, 2);
    let n = b * t;
    let params = randn(&mut rng, 2 * c + c * 3 * c + 3 * c + c * c, 0.7);
    let build = move |tape: &mut Tape<f64>, params: &[f64], x: &[Var]| {
        let mut r = Rng64::seed_from_u64(0);
        let h = tape.layernorm(params, x[0], p(0, 1, c), p(c, 1, c));
        let qkv = tape.linear(
            params,
            h,
            p(2 * c, c, 3 * c),
            Some(p(2 * c + 3 * c * c, 1, 3 * c)),
            false,
        );
        let a = tape.attention(qkv, b, nh, 0.0, &mut r);
        let o = tape.linear(params, a, p(2 * c + 3 * c * c + 3 * c, c, c), None, false);
        let g = tape.gelu(o);
        tape.add(x[0], g)
    };
    check(
        "block",
        &build,
        vec![(randn(&mut rng, n * c, 1.0), n, c)],
        params,
    );
}

/// An overwriting backward pass (`Write::Set`) writes every element of the gradient buffer:
/// a parameter the loss does not reach (here a linear layer whose output is unused, and the
/// gaps around the parameters) comes out 0, not the NaN that was there; the rest equals the
/// accumulating pass into zeros, and a weight used twice gets the sum of both uses.
#[test]
fn overwriting_backward_writes_every_parameter() {
    use ferrogpt_core::Write;
    let mut rng = Rng64::seed_from_u64(13);
    let (n, c, v) = (5, 3, 4);
    // [gap 2] w1 (c×v) [gap 1] w_unused (c×v) [gap 3]
    let (w1, w2) = (p(2, c, v), p(2 + c * v + 1, c, v));
    let len = w2.offset + w2.len() + 3;
    let params = randn(&mut rng, len, 0.5);
    let x = randn(&mut rng, n * c, 1.0);
    let targets: Vec<u32> = (0..n).map(|_| rng.gen_range(0..c as u32)).collect();
    // `into`: None sums the norm as it goes (`backward_with_norm`, overwriting).
    let grads = |into: Option<Write>, fill: f64| {
        let mut tape = Tape::new(Level::Naive).unwrap();
        let xv = tape.input(&x, n, c);
        let h = tape.linear(&params, xv, w1, None, false);
        let _unused = tape.linear(&params, xv, w2, None, false);
        // h fans out (GELU and the residual add).
        let g = tape.gelu(h);
        let h2 = tape.add(h, g);
        // w1 used again, in the tied-head layout (stored (c, v), read as x·w1ᵀ: n×c logits):
        // two contributions to dW1, the first overwrites, the second adds.
        let logits = tape.linear(&params, h2, w1, None, true);
        tape.softmax_cross_entropy(logits, &targets, c);
        let mut d = vec![fill; len];
        let sq = match into {
            Some(into) => {
                tape.backward_scaled(&params, &mut d, 1.0, into);
                None
            }
            None => Some(tape.backward_with_norm(&params, &mut d, 1.0)),
        };
        (d, sq)
    };
    let (add, _) = grads(Some(Write::Add), 0.0);
    let (set, _) = grads(Some(Write::Set), f64::NAN);
    assert_eq!(set, add);
    // The norm summed along the way: w1 (written twice) counted once, after its last write;
    // w2 (its product unused, so never written) and the gaps as zeros.
    let (fused, sq) = grads(None, f64::NAN);
    assert_eq!(fused, add);
    let want: f64 = add.iter().map(|g| g * g).sum();
    let sq = sq.unwrap();
    assert!(
        want > 0.0 && (sq - want).abs() <= 1e-12 * want,
        "{sq} vs {want}"
    );
    assert!(add[w1.range()].iter().any(|&g| g != 0.0));
    assert!(set[w2.range()].iter().all(|&g| g == 0.0));
    assert!(set[..2]
        .iter()
        .chain(&set[w2.offset - 1..w2.offset])
        .all(|&g| g == 0.0));
}

// ---- Llama-style ops: token-only embedding, RMSNorm, RoPE, SwiGLU, grouped-query attention ----

#[test]
fn embedding_without_positions() {
    let mut rng = Rng64::seed_from_u64(14);
    let (v, c, t) = (11, 5, 7);
    let params = randn(&mut rng, v * c, 1.0);
    let tokens: Vec<u32> = (0..3 * t).map(|_| rng.gen_range(0..v as u32)).collect();
    let build = move |tape: &mut Tape<f64>, params: &[f64], _: &[Var]| {
        tape.embedding(params, &tokens, p(0, v, c), None, t)
    };
    check("embedding (no wpe)", &build, vec![], params);
}

#[test]
fn rmsnorm() {
    let mut rng = Rng64::seed_from_u64(15);
    // C = 13: the tail loop alone; C = 37: two 16-lane chunks and a tail.
    for (n, c) in [(7, 13), (5, 37)] {
        let params = randn(&mut rng, c, 1.0);
        let build = move |tape: &mut Tape<f64>, params: &[f64], x: &[Var]| {
            tape.rmsnorm(params, x[0], p(0, 1, c), 1e-5)
        };
        check(
            &format!("rmsnorm C={c}"),
            &build,
            vec![(randn(&mut rng, n * c, 2.0), n, c)],
            params,
        );
    }
}

/// Hugging Face's default frequencies: `inv_freq[i] = base^(-2i/HS)`.
fn inv_freq(hs: usize, base: f64) -> Vec<f64> {
    (0..hs / 2)
        .map(|i| base.powf(-((2 * i) as f64) / hs as f64))
        .collect()
}

#[test]
fn rope() {
    let mut rng = Rng64::seed_from_u64(16);
    // (NH, KV, HS, T, sequences): odd T, several sequences in the rows.
    for (nh, kv, hs, t, seqs) in [
        (3, 1, 6, 5, 2),
        (3, 1, 8, 7, 3),
        (4, 2, 6, 7, 2),
        (4, 2, 8, 5, 3),
    ] {
        let (n, w) = (seqs * t, (nh + 2 * kv) * hs);
        let freq = inv_freq(hs, 10.0);
        let build =
            move |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| tape.rope(x[0], t, nh, kv, &freq);
        check(
            &format!("rope NH={nh} KV={kv} HS={hs} T={t}"),
            &build,
            vec![(randn(&mut rng, n * w, 1.0), n, w)],
            vec![],
        );
    }
}

#[test]
fn swiglu() {
    let mut rng = Rng64::seed_from_u64(17);
    let build = |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| tape.swiglu(x[0]);
    check(
        "swiglu",
        &build,
        vec![(randn(&mut rng, 5 * 14, 3.0), 5, 14)],
        vec![],
    );
}

#[test]
fn attention_gqa() {
    let mut rng = Rng64::seed_from_u64(18);
    // (B, T, NH, KV, HS, dropout)
    for (b, t, nh, kv, hs, drop) in [
        (2, 5, 4, 1, 3, 0.0),
        (2, 5, 4, 2, 2, 0.0),
        (2, 4, 3, 1, 3, 0.0),
        (2, 4, 4, 1, 2, 0.3),
        (2, 5, 4, 2, 3, 0.3),
    ] {
        let w = (nh + 2 * kv) * hs;
        let build = move |tape: &mut Tape<f64>, _: &[f64], x: &[Var]| {
            let mut r = Rng64::seed_from_u64(0); // the same mask at every evaluation
            tape.attention_gqa(x[0], b, nh, kv, drop, &mut r)
        };
        check(
            &format!("attention NH={nh} KV={kv} dropout {drop}"),
            &build,
            vec![(randn(&mut rng, b * t * w, 1.0), b * t, w)],
            vec![],
        );
    }
}

/// A Llama-style block ending in the loss: token embedding (no positions) plus an input x,
/// RMSNorm → qkv (out, in) → RoPE → grouped-query attention → output projection → residual →
/// RMSNorm → gate|up → SwiGLU → down → residual → softmax cross-entropy. Gradients of x and of
/// every parameter against central differences of the loss; then the overwriting passes
/// (`Write::Set`, and with the norm) equal the accumulating one.
#[test]
fn llama_block_loss() {
    use ferrogpt_core::Write;
    let mut rng = Rng64::seed_from_u64(19);
    let (b, t, nh, kv, hs, f, v) = (2, 5, 4, 2, 2, 6, 7);
    let (c, wq) = (nh * hs, (nh + 2 * kv) * hs);
    let n = b * t;
    // Layout: wte (V, C) | rms1 (C) | wqkv (WQ, C) | wo (C, C) | rms2 (C) | wgu (2F, C) | wd (C, F).
    let wte = p(0, v, c);
    let rms1 = p(wte.offset + wte.len(), 1, c);
    let wqkv = p(rms1.offset + c, wq, c);
    let wo = p(wqkv.offset + wqkv.len(), c, c);
    let rms2 = p(wo.offset + wo.len(), 1, c);
    let wgu = p(rms2.offset + c, 2 * f, c);
    let wd = p(wgu.offset + wgu.len(), c, f);
    let len = wd.offset + wd.len();
    let mut params = randn(&mut rng, len, 0.7);
    for i in rms1.range().chain(rms2.range()) {
        params[i] += 1.0; // norm weights around 1, as initialised
    }
    let x = randn(&mut rng, n * c, 1.0);
    let tokens: Vec<u32> = (0..n).map(|_| rng.gen_range(0..v as u32)).collect();
    let targets: Vec<u32> = (0..n).map(|_| rng.gen_range(0..c as u32)).collect();
    let freq = inv_freq(hs, 10000.0);
    let eval = |x: &[f64], params: &[f64]| {
        let mut tape = Tape::new(Level::Naive).unwrap();
        let xv = tape.input(x, n, c);
        let mut r = Rng64::seed_from_u64(0);
        let e = tape.embedding(params, &tokens, wte, None, t);
        let h0 = tape.add(e, xv);
        let h = tape.rmsnorm(params, h0, rms1, 1e-6);
        let qkv = tape.linear(params, h, wqkv, None, true);
        let qkv = tape.rope(qkv, t, nh, kv, &freq);
        let a = tape.attention_gqa(qkv, b, nh, kv, 0.0, &mut r);
        let a = tape.linear(params, a, wo, None, true);
        let h1 = tape.add(h0, a);
        let h = tape.rmsnorm(params, h1, rms2, 1e-6);
        let h = tape.linear(params, h, wgu, None, true);
        let h = tape.swiglu(h);
        let h = tape.linear(params, h, wd, None, true);
        let out = tape.add(h1, h);
        let loss = tape.softmax_cross_entropy(out, &targets, c);
        (tape, xv, loss)
    };
    let (mut tape, xv, _) = eval(&x, &params);
    let mut dparams = vec![0.0; len];
    tape.backward(&params, &mut dparams);
    let dx = tape.grad(xv).to_vec();
    let h = 1e-5;
    let numeric_x: Vec<f64> = (0..x.len())
        .map(|j| {
            let (mut a, mut m) = (x.clone(), x.clone());
            a[j] += h;
            m[j] -= h;
            (eval(&a, &params).2 - eval(&m, &params).2) / (2.0 * h)
        })
        .collect();
    let e = rel_err(&dx, &numeric_x);
    assert!(e < 1e-6, "llama block: input gradient relative error {e:e}");
    let numeric_p: Vec<f64> = (0..len)
        .map(|j| {
            let (mut a, mut m) = (params.clone(), params.clone());
            a[j] += h;
            m[j] -= h;
            (eval(&x, &a).2 - eval(&x, &m).2) / (2.0 * h)
        })
        .collect();
    for (name, q) in [
        ("wte", wte),
        ("rms1", rms1),
        ("wqkv", wqkv),
        ("wo", wo),
        ("rms2", rms2),
        ("wgu", wgu),
        ("wd", wd),
    ] {
        let e = rel_err(&dparams[q.range()], &numeric_p[q.range()]);
        assert!(
            e < 1e-6,
            "llama block: {name} gradient relative error {e:e}"
        );
        assert!(dparams[q.range()].iter().any(|&g| g != 0.0), "{name}: zero");
    }
    // Overwriting into garbage equals accumulating into zeros; the fused norm is Σ g².
    let (mut tape, _, _) = eval(&x, &params);
    let mut set = vec![f64::NAN; len];
    tape.backward_scaled(&params, &mut set, 1.0, Write::Set);
    assert_eq!(set, dparams);
    let (mut tape, _, _) = eval(&x, &params);
    let mut fused = vec![f64::NAN; len];
    let sq = tape.backward_with_norm(&params, &mut fused, 1.0);
    assert_eq!(fused, dparams);
    let want: f64 = dparams.iter().map(|g| g * g).sum();
    assert!((sq - want).abs() <= 1e-12 * want, "{sq} vs {want}");
}
