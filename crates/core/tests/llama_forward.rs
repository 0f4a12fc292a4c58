//! The Llama-style ops' forward passes against direct transcriptions of Hugging Face's formulas
//! (RoPE's `x·cos + rotate_half(x)·sin`, `LlamaRMSNorm`, SwiGLU), in f64 and f32, at sizes on
//! both sides of the threading threshold; RoPE's slice helpers (what a decoder uses) against
//! the tape's op; and the backward passes of the threaded paths against the single-row ones.

use ferrogpt_core::ops::{rmsnorm, rope, swiglu, Write};
use ferrogpt_core::{Float, Level, Tape};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

fn randv(rng: &mut Rng64, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| (rng.gen::<f64>() * 2.0 - 1.0) * scale)
        .collect()
}

fn cast<T: Float>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

/// max |a - b| / max |b|.
fn rel<T: Float>(a: &[T], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((x.to_f64() - y).abs()))
        / scale
}

fn inv_freq(hs: usize, base: f64) -> Vec<f64> {
    (0..hs / 2)
        .map(|i| base.powf(-((2 * i) as f64) / hs as f64))
        .collect()
}

/// Hugging Face's `apply_rotary_pos_emb` on qkv rows, written as in transformers: for q and k,
/// `x·cos + rotate_half(x)·sin` with `emb = cat(freqs, freqs)`, `rotate_half(x) = cat(−x2, x1)`;
/// v unchanged. Row r at position r % t.
fn hf_rope(qkv: &[f64], t: usize, nh: usize, kv: usize, hs: usize, inv_freq: &[f64]) -> Vec<f64> {
    let w = (nh + 2 * kv) * hs;
    let h2 = hs / 2;
    let mut out = qkv.to_vec();
    for (r, (o, x)) in out.chunks_exact_mut(w).zip(qkv.chunks_exact(w)).enumerate() {
        let pos = (r % t) as f64;
        let emb: Vec<f64> = (0..hs).map(|i| pos * inv_freq[i % h2]).collect();
        for head in 0..nh + kv {
            let x = &x[head * hs..][..hs];
            let rot: Vec<f64> = (0..hs)
                .map(|i| if i < h2 { -x[i + h2] } else { x[i - h2] })
                .collect();
            for i in 0..hs {
                o[head * hs + i] = x[i] * emb[i].cos() + rot[i] * emb[i].sin();
            }
        }
    }
    out
}

fn tape_rope<T: Float>(
    qkv: &[f64],
    t: usize,
    nh: usize,
    kv: usize,
    hs: usize,
    f: &[f64],
) -> Vec<T> {
    let mut tape = Tape::<T>::new(Level::Naive).unwrap();
    let w = (nh + 2 * kv) * hs;
    let x = tape.input(&cast::<T>(qkv), qkv.len() / w, w);
    let y = tape.rope(x, t, nh, kv, f);
    tape.value(y).to_vec()
}

#[test]
fn rope_matches_hugging_face() {
    let mut rng = Rng64::seed_from_u64(1);
    // (NH, KV, HS, T, sequences); the last has 111 rows of 512: the threaded path, with
    // sequence boundaries inside the threads' row blocks.
    for (nh, kv, hs, t, seqs) in [
        (3, 1, 8, 5, 2),
        (4, 2, 6, 7, 3),
        (2, 2, 4, 1, 2),
        (4, 2, 64, 37, 3),
    ] {
        let w = (nh + 2 * kv) * hs;
        let f = inv_freq(hs, 10000.0);
        let x = randv(&mut rng, seqs * t * w, 1.0);
        let want = hf_rope(&x, t, nh, kv, hs, &f);
        let got = tape_rope::<f64>(&x, t, nh, kv, hs, &f);
        assert!(rel(&got, &want) < 1e-14, "f64 NH={nh} KV={kv} HS={hs}");
        let got = tape_rope::<f32>(&x, t, nh, kv, hs, &f);
        assert!(rel(&got, &want) < 1e-6, "f32 NH={nh} KV={kv} HS={hs}");
        // The second sequence starts again at position 0: its first row equals the first
        // sequence's first row rotated at 0 (the identity on q and k).
        if seqs > 1 {
            assert_eq!(&got[t * w..][..w], &cast::<f32>(&x[t * w..][..w])[..]);
        }
    }
}

/// `table` + `rotate` (a decoder's one position) agree bit for bit with the tape's op, and
/// `rotate_inverse` undoes `rotate`.
#[test]
fn rope_slice_helpers_match_the_op() {
    let mut rng = Rng64::seed_from_u64(2);
    let (nh, kv, hs, t) = (4, 2, 8, 7);
    let w = (nh + 2 * kv) * hs;
    let f = inv_freq(hs, 500.0);
    let x = randv(&mut rng, 2 * t * w, 1.0);
    let op = tape_rope::<f32>(&x, t, nh, kv, hs, &f);
    let (cos, sin) = rope::table::<f32>(t, &f);
    assert_eq!((cos.len(), sin.len()), (t * hs / 2, t * hs / 2));
    let x32 = cast::<f32>(&x);
    for (r, (row, want)) in x32.chunks_exact(w).zip(op.chunks_exact(w)).enumerate() {
        let pos = r % t;
        let (c, s) = (
            &cos[pos * hs / 2..][..hs / 2],
            &sin[pos * hs / 2..][..hs / 2],
        );
        let mut got = row.to_vec();
        for head in got[..(nh + kv) * hs].chunks_exact_mut(hs) {
            rope::rotate(head, c, s);
        }
        assert_eq!(&got, want, "row {r}");
        for head in got[..(nh + kv) * hs].chunks_exact_mut(hs) {
            rope::rotate_inverse(head, c, s);
        }
        assert!(rel(&got, &x[r * w..][..w]) < 1e-6);
    }
}

/// The backward pass is the transpose of the rotation, v passed through; written (`Set`) or
/// added (`Add`); threaded at this size.
#[test]
fn rope_backward_is_the_inverse_rotation() {
    let mut rng = Rng64::seed_from_u64(3);
    let (nh, kv, hs, t, seqs) = (4, 2, 64, 37, 3);
    let (w, h2) = ((nh + 2 * kv) * hs, hs / 2);
    let f = inv_freq(hs, 10000.0);
    let g = randv(&mut rng, seqs * t * w, 1.0);
    let mut want = g.clone();
    for (r, row) in want.chunks_exact_mut(w).enumerate() {
        let pos = (r % t) as f64;
        for head in row[..(nh + kv) * hs].chunks_exact_mut(hs) {
            for i in 0..h2 {
                let (c, s) = ((pos * f[i]).cos(), (pos * f[i]).sin());
                let (a, b) = (head[i], head[i + h2]);
                head[i] = a * c + b * s;
                head[i + h2] = b * c - a * s;
            }
        }
    }
    let (cos, sin) = rope::table::<f64>(t, &f);
    let mut d = vec![f64::NAN; g.len()];
    rope::backward(Write::Set, &mut d, &g, &cos, &sin, t, w, nh + kv);
    assert!(rel(&d, &want) < 1e-14);
    let base = randv(&mut rng, g.len(), 1.0);
    let mut d = base.clone();
    rope::backward(Write::Add, &mut d, &g, &cos, &sin, t, w, nh + kv);
    let sum: Vec<f64> = base.iter().zip(&want).map(|(a, b)| a + b).collect();
    assert!(rel(&d, &sum) < 1e-14);
}

/// `LlamaRMSNorm` as in transformers: `w · x · rsqrt(mean(x²) + eps)`, statistics in f64 here.
fn hf_rmsnorm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let c = w.len();
    let mut out = vec![0.0; x.len()];
    for (o, x) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let var = x.iter().map(|v| v * v).sum::<f64>() / c as f64;
        let r = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            o[i] = w[i] * (x[i] * r);
        }
    }
    out
}

#[test]
fn rmsnorm_matches_hugging_face_and_threads_agree() {
    let mut rng = Rng64::seed_from_u64(4);
    // 7×13 one thread; 70×300 threaded.
    for (n, c) in [(7, 13), (70, 300)] {
        let x = randv(&mut rng, n * c, 3.0);
        let w = randv(&mut rng, c, 1.0);
        let want = hf_rmsnorm(&x, &w, 1e-6);
        for f32 in [false, true] {
            let run = |xs: &[f64]| -> Vec<f64> {
                if f32 {
                    let mut tape = Tape::<f32>::new(Level::Naive).unwrap();
                    let xv = tape.input(&cast::<f32>(xs), xs.len() / c, c);
                    let y = tape.rmsnorm(&cast::<f32>(&w), xv, param(c), 1e-6);
                    tape.value(y).iter().map(|&v| v as f64).collect()
                } else {
                    let mut tape = Tape::<f64>::new(Level::Naive).unwrap();
                    let xv = tape.input(xs, xs.len() / c, c);
                    let y = tape.rmsnorm(&w, xv, param(c), 1e-6);
                    tape.value(y).to_vec()
                }
            };
            let tol = if f32 { 1e-6 } else { 1e-14 };
            let got = run(&x);
            assert!(rel(&got, &want) < tol, "rmsnorm {n}x{c} f32={f32}");
        }
        // Backward: the threaded input gradient equals the one-row computation bit for bit;
        // dw accumulates.
        let g = randv(&mut rng, n * c, 1.0);
        let mut rstd = vec![0.0; n];
        let mut y = vec![0.0; n * c];
        rmsnorm::forward(&mut y, &mut rstd, &x, &w, 1e-6, c);
        let (mut dx, mut dw) = (vec![f64::NAN; n * c], vec![0.5; c]);
        rmsnorm::backward(Write::Set, &mut dx, &mut dw, &g, &x, &w, &rstd, c);
        let mut dw1 = vec![0.5; c];
        for r in 0..n {
            let mut d = vec![0.0; c];
            let rows = r * c..(r + 1) * c;
            rmsnorm::backward(
                Write::Set,
                &mut d,
                &mut dw1,
                &g[rows.clone()],
                &x[rows.clone()],
                &w,
                &rstd[r..r + 1],
                c,
            );
            assert_eq!(&dx[rows], &d[..]);
        }
        assert!(rel(&dw, &dw1) < 1e-14);
    }
}

fn param(c: usize) -> ferrogpt_core::Param {
    ferrogpt_core::Param {
        offset: 0,
        rows: 1,
        cols: c,
    }
}

#[test]
fn swiglu_matches_the_formula_and_threads_agree() {
    let mut rng = Rng64::seed_from_u64(5);
    // 5×(2·7) one thread; 40×(2·500) threaded.
    for (n, f) in [(5, 7), (40, 500)] {
        let x = randv(&mut rng, n * 2 * f, 4.0);
        let mut want = vec![0.0; n * f];
        for (o, x) in want.chunks_exact_mut(f).zip(x.chunks_exact(2 * f)) {
            for i in 0..f {
                let g = x[i];
                o[i] = g / (1.0 + (-g).exp()) * x[f + i];
            }
        }
        let mut out = vec![f64::NAN; n * f];
        swiglu::forward(&mut out, &x, f);
        assert!(rel(&out, &want) < 1e-14);
        let mut out32 = vec![f32::NAN; n * f];
        swiglu::forward(&mut out32, &cast::<f32>(&x), f);
        assert!(rel(&out32, &want) < 1e-6);
        // Backward: threaded equals one row at a time, bit for bit; Add adds.
        let g = randv(&mut rng, n * f, 1.0);
        let mut dx = vec![f64::NAN; n * 2 * f];
        swiglu::backward(Write::Set, &mut dx, &x, &g, f);
        for r in 0..n {
            let mut d = vec![0.0; 2 * f];
            let (xr, gr) = (&x[r * 2 * f..][..2 * f], &g[r * f..][..f]);
            swiglu::backward(Write::Set, &mut d, xr, gr, f);
            assert_eq!(&dx[r * 2 * f..][..2 * f], &d[..]);
        }
        let mut acc = vec![1.0; n * 2 * f];
        swiglu::backward(Write::Add, &mut acc, &x, &g, f);
        let want: Vec<f64> = dx.iter().map(|d| d + 1.0).collect();
        assert!(rel(&acc, &want) < 1e-15);
    }
}

/// The token-only embedding is the rows of wte.
#[test]
fn embedding_without_positions_is_the_token_rows() {
    let (v, c, t) = (5, 3, 4);
    let wte: Vec<f64> = (0..v * c).map(|i| i as f64).collect();
    let tokens = [4u32, 0, 2, 2, 1, 3, 0, 4];
    let mut tape = Tape::<f64>::new(Level::Naive).unwrap();
    let wte_p = ferrogpt_core::Param {
        offset: 0,
        rows: v,
        cols: c,
    };
    let e = tape.embedding(&wte, &tokens, wte_p, None, t);
    for (row, &tok) in tape.value(e).chunks_exact(c).zip(&tokens) {
        assert_eq!(row, &wte[tok as usize * c..][..c]);
    }
}

/// A forward-only tape (`reset(false)`) computes what a recording one does, and a tape reused
/// across steps (buffers kept by `reset`) gives the same values and gradients each step.
#[test]
fn forward_only_and_reused_tape_agree() {
    let mut rng = Rng64::seed_from_u64(6);
    let (b, t, nh, kv, hs) = (2, 5, 4, 2, 4);
    let (c, w) = (nh * hs, (nh + 2 * kv) * hs);
    let params = randv(&mut rng, c, 1.0);
    let x = randv(&mut rng, b * t * w, 1.0);
    let g = randv(&mut rng, b * t * c / 2, 1.0); // SwiGLU halves the width
    let f = inv_freq(hs, 10000.0);
    let mut tape = Tape::<f64>::new(Level::Naive).unwrap();
    let step = |tape: &mut Tape<f64>, recording: bool| {
        tape.reset(recording);
        let xv = tape.input(&x, b * t, w);
        let q = tape.rope(xv, t, nh, kv, &f);
        let mut r = Rng64::seed_from_u64(0);
        let a = tape.attention_gqa(q, b, nh, kv, 0.0, &mut r);
        let a = tape.rmsnorm(&params, a, param(c), 1e-5);
        let h = tape.swiglu(a);
        let y = tape.value(h).to_vec();
        let (gx, dp) = if recording {
            let mut dp = vec![0.0; c];
            tape.backward_from(h, &g, &params, &mut dp);
            (tape.grad(xv).to_vec(), dp)
        } else {
            (vec![], vec![])
        };
        (y, gx, dp)
    };
    let first = step(&mut tape, true);
    let eval = step(&mut tape, false);
    let again = step(&mut tape, true);
    assert_eq!(first.0, eval.0);
    assert_eq!(first, again);
    assert!(first.1.iter().any(|&v| v != 0.0) && first.2.iter().any(|&v| v != 0.0));
}
