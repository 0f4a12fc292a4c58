//! The GEMV kernels (f32, bf16, int8) of every kernel family this CPU has against the f64
//! oracles on odd shapes; the formats' round trips and error bounds. Kernels the CPU lacks are
//! named on stderr as SKIPPED.

mod common;

use common::Rng;
use ferrogpt_gemm::gemv::{
    self, bf16_to_f32, f32_to_bf16, quantize_q8_block, Kernel, Layout, Matrix, QuantizedVector,
    WeightFormat, Q8_BLOCK,
};

const SIZES: [usize; 5] = [1, 7, 33, 127, 513];

/// The kernels this CPU runs; the others are reported.
fn kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| {
            let ok = k.supported();
            if !ok {
                eprintln!("SKIPPED: gemv kernel {k} (this CPU lacks its instructions)");
            }
            ok
        })
        .collect()
}

/// Random weights in [-1, 1) with a zero block and an outlier, so that every block kind occurs.
fn weights(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.next() as f32).collect();
    if cols >= Q8_BLOCK && rows > 1 {
        w[cols..cols + Q8_BLOCK].fill(0.0);
    }
    if let Some(v) = w.last_mut() {
        *v = 7.5;
    }
    w
}

/// Σ|W[r,c]|·|x[c]| per row (the scale of the f32 rounding error).
fn magnitude(m: &Matrix, x: &[f32]) -> Vec<f64> {
    let a = m.dequantize();
    (0..m.rows())
        .map(|r| {
            (0..m.cols())
                .map(|c| (a[r * m.cols() + c] as f64 * x[c] as f64).abs())
                .sum()
        })
        .collect()
}

/// The bound of the int8 kernels against the f64 product with unquantized x:
/// Σ_b d_x[b]/2 · Σ_{c∈b} |W[r,c]| per row (module doc of gemv).
fn activation_bound(m: &Matrix, x: &[f32]) -> Vec<f64> {
    let xq = QuantizedVector::new(x);
    let a = m.dequantize();
    (0..m.rows())
        .map(|r| {
            (0..m.cols())
                .map(|c| xq.d[c / Q8_BLOCK] as f64 / 2.0 * a[r * m.cols() + c].abs() as f64)
                .sum::<f64>()
                * (1.0 + 1e-5)
        })
        .collect()
}

fn check(kernel: Kernel, format: WeightFormat, rows: usize, cols: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let w = weights(&mut rng, rows, cols);
    let x: Vec<f32> = (0..cols).map(|_| rng.next() as f32).collect();
    let bias: Vec<f32> = (0..rows).map(|_| rng.next() as f32).collect();
    let m = Matrix::from_f32(format, rows, cols, &w, Layout::OutIn).unwrap();
    let what = format!("{kernel} {format} {rows}x{cols}");
    let exact = gemv::reference_quantized_input(&m, &x);
    let plain = gemv::reference(&m, &x);
    let mag = magnitude(&m, &x);
    let act = activation_bound(&m, &x);
    // Overwrite, with a bias, then accumulate onto it again.
    let mut y = vec![f32::NAN; rows];
    gemv::gemv(kernel, &m, &x, &mut y, Some(&bias), false).unwrap();
    let mut y2 = y.clone();
    gemv::gemv(kernel, &m, &x, &mut y2, None, true).unwrap();
    for r in 0..rows {
        let tol = 1e-5 * mag[r] + 1e-6;
        let got = y[r] as f64 - bias[r] as f64;
        assert!(
            (got - exact[r]).abs() <= tol,
            "{what}: row {r}: {got} vs oracle {} (tol {tol})",
            exact[r]
        );
        if format == WeightFormat::Int8 {
            assert!(
                (got - plain[r]).abs() <= act[r] + tol,
                "{what}: row {r}: {got} vs f64 of unquantized x {} (bound {})",
                plain[r],
                act[r] + tol
            );
        }
        let twice = y2[r] as f64 - bias[r] as f64;
        assert!(
            (twice - 2.0 * exact[r]).abs() <= 2.0 * tol + 1e-6 * bias[r].abs() as f64,
            "{what}: row {r} accumulated: {twice} vs {}",
            2.0 * exact[r]
        );
    }
}

#[test]
fn every_kernel_every_format_odd_shapes() {
    let mut seed = 1;
    for kernel in kernels() {
        for format in WeightFormat::ALL {
            for rows in SIZES {
                for cols in SIZES {
                    check(kernel, format, rows, cols, seed);
                    seed += 1;
                }
            }
            // Wide enough to be split over threads, columns not a multiple of the lanes.
            check(kernel, format, 1031, 769, seed);
        }
    }
}

#[test]
fn layouts_agree() {
    let mut rng = Rng::new(7);
    let (rows, cols) = (33, 70);
    let w = weights(&mut rng, rows, cols);
    // The same matrix given transposed, (in, out).
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    for format in WeightFormat::ALL {
        let a = Matrix::from_f32(format, rows, cols, &w, Layout::OutIn).unwrap();
        let b = Matrix::from_f32(format, rows, cols, &t, Layout::InOut).unwrap();
        assert_eq!(a.dequantize(), b.dequantize(), "{format}");
        let mut back = vec![0f32; w.len()];
        b.dequantize_into(&mut back, Layout::InOut);
        let mut want = vec![0f32; w.len()];
        a.dequantize_into(&mut want, Layout::InOut);
        assert_eq!(back, want, "{format}");
    }
}

#[test]
fn q8_blocks_round_trip_within_half_a_step() {
    let mut rng = Rng::new(11);
    for len in [1, 5, 32] {
        for scale in [1e-6f32, 1.0, 3e4] {
            let x: Vec<f32> = (0..len).map(|_| rng.next() as f32 * scale).collect();
            let mut q = vec![0i8; len];
            let d = quantize_q8_block(&x, &mut q);
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(d, amax / 127.0);
            assert!(q.iter().all(|&v| (-127..=127).contains(&v)));
            assert!(
                q.iter().any(|&v| v.abs() == 127),
                "the largest maps to ±127"
            );
            for (&v, &qv) in x.iter().zip(&q) {
                let err = (v - d * qv as f32).abs();
                assert!(
                    err <= d / 2.0 * (1.0 + 1e-6),
                    "{v} → {qv}·{d}: off by {err}"
                );
            }
        }
    }
    let mut q = [1i8; 32];
    assert_eq!(quantize_q8_block(&[0.0; 32], &mut q), 0.0);
    assert_eq!(q, [0; 32]);
}

#[test]
fn int8_matrix_round_trip_and_padding() {
    let mut rng = Rng::new(5);
    let (rows, cols) = (9, 45); // 2 blocks a row, the second 13 values + 19 padding
    let w = weights(&mut rng, rows, cols);
    let m = Matrix::from_f32(WeightFormat::Int8, rows, cols, &w, Layout::OutIn).unwrap();
    let (q, d) = m.q8_rows().unwrap();
    let (q, d) = (&q[..], &d[..]);
    assert_eq!((q.len(), d.len()), (rows * 64, rows * 2));
    for r in 0..rows {
        assert!(q[r * 64 + 45..r * 64 + 64].iter().all(|&v| v == 0));
    }
    let back = m.dequantize();
    for r in 0..rows {
        for c in 0..cols {
            let step = d[r * 2 + c / 32];
            assert!((back[r * cols + c] - w[r * cols + c]).abs() <= step / 2.0 * (1.0 + 1e-6));
        }
    }
    // The stored parts rebuild the same matrix; wrong lengths are refused.
    let again = Matrix::from_q8(rows, cols, q.to_vec(), d.to_vec()).unwrap();
    assert_eq!(again.dequantize(), back);
    assert!(Matrix::from_q8(rows, cols, q[1..].to_vec(), d.to_vec()).is_err());
    assert!(Matrix::from_q8(rows, cols, q.to_vec(), vec![f32::NAN; d.len()]).is_err());
    let mut bad = q.to_vec();
    bad[3] = i8::MIN; // no negation fits i8: refused
    assert!(Matrix::from_q8(rows, cols, bad, d.to_vec()).is_err());
    assert_eq!(m.bytes(), rows.next_multiple_of(4) * (64 + 2 * 4)); // 3 padding rows
}

#[test]
fn bf16_rounds_to_nearest_even() {
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
    assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 2f32.powi(-8))), 1.0);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
    assert_eq!(
        bf16_to_f32(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
        1.0 + 2f32.powi(-6)
    );
    assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    assert_eq!(
        bf16_to_f32(f32_to_bf16(-0.0)).to_bits(),
        (-0.0f32).to_bits()
    );
    let mut rng = Rng::new(3);
    for _ in 0..10_000 {
        let v = (rng.next() * 1e3) as f32;
        let r = bf16_to_f32(f32_to_bf16(v));
        // 8 significant bits: off by at most half a step, 2^-8 of the value.
        assert!((r - v).abs() <= v.abs() * 2f32.powi(-8), "{v} → {r}");
    }
}

#[test]
fn attention_helpers_match_the_plain_loops() {
    let mut rng = Rng::new(9);
    for kernel in kernels() {
        for (rows, k, ld) in [(1, 1, 1), (7, 64, 96), (33, 13, 40), (130, 64, 64)] {
            let a: Vec<f32> = (0..(rows - 1) * ld + k)
                .map(|_| rng.next() as f32)
                .collect();
            let x: Vec<f32> = (0..k).map(|_| rng.next() as f32).collect();
            let mut s = vec![0f32; rows];
            gemv::dot_rows(kernel, &a, ld, &x, &mut s);
            for j in 0..rows {
                let want: f64 = (0..k).map(|p| a[j * ld + p] as f64 * x[p] as f64).sum();
                assert!(
                    (s[j] as f64 - want).abs() <= 1e-5 * k as f64,
                    "{kernel} dot"
                );
            }
            let c: Vec<f32> = (0..rows).map(|_| rng.next() as f32).collect();
            let mut o: Vec<f32> = (0..k).map(|_| rng.next() as f32).collect();
            let o0 = o.clone();
            gemv::add_weighted_rows(kernel, &a, ld, &c, &mut o);
            for p in 0..k {
                let want: f64 = o0[p] as f64
                    + (0..rows)
                        .map(|j| c[j] as f64 * a[j * ld + p] as f64)
                        .sum::<f64>();
                assert!(
                    (o[p] as f64 - want).abs() <= 1e-5 * rows as f64,
                    "{kernel} axpy"
                );
            }
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    let m = Matrix::from_f32(WeightFormat::F32, 3, 4, &[0.0; 12], Layout::OutIn).unwrap();
    let mut y = [0f32; 3];
    assert!(gemv::gemv(Kernel::Scalar, &m, &[0.0; 5], &mut y, None, false).is_err());
    assert!(gemv::gemv(
        Kernel::Scalar,
        &m,
        &[0.0; 4],
        &mut y,
        Some(&[0.0; 2]),
        false
    )
    .is_err());
    for format in WeightFormat::ALL {
        assert!(Matrix::from_f32(format, 3, 4, &[0.0; 11], Layout::OutIn).is_err());
    }
    assert!("int4".parse::<WeightFormat>().is_err());
    assert_eq!("bf16".parse::<WeightFormat>().unwrap(), WeightFormat::Bf16);
}

/// The VNNI kernels' offset trick, in plain integers (it runs here even where no VNNI kernel
/// can): per lane of four bytes, `-128·Σx + Σ (w + 128)·x = Σ w·x`, with the offsets the
/// quantized vector carries.
#[test]
fn vnni_offset_trick_is_exact() {
    let mut rng = Rng::new(13);
    let x: Vec<f32> = (0..70).map(|_| rng.next() as f32).collect();
    let xq = QuantizedVector::new(&x);
    assert_eq!(xq.neg_offset.len(), xq.q.len() / 4);
    let w: Vec<i8> = (0..xq.q.len())
        .map(|_| (rng.next() * 127.0).round() as i8)
        .collect();
    for (l, off) in xq.neg_offset.iter().enumerate() {
        let (ws, xs) = (&w[4 * l..4 * l + 4], &xq.q[4 * l..4 * l + 4]);
        let unsigned: i32 = ws
            .iter()
            .zip(xs)
            .map(|(&w, &x)| ((w as u8 ^ 0x80) as i32) * x as i32)
            .sum();
        let exact: i32 = ws.iter().zip(xs).map(|(&w, &x)| w as i32 * x as i32).sum();
        assert_eq!(off + unsigned, exact, "lane {l}");
    }
}

/// f32 weights multiplied where they lie ([`gemv::gemv_in_place`]), in both layouts, against
/// the f64 oracle on odd shapes (including more inputs than one task reduces, and a matrix
/// wide enough to be split over threads), with a bias and accumulation; the same bits on one
/// thread as on the pool.
#[test]
fn in_place_f32_matches_the_oracle_in_both_layouts() {
    let mut seed = 500;
    let shapes = SIZES
        .iter()
        .flat_map(|&r| SIZES.iter().map(move |&c| (r, c)))
        .chain([(1031, 769), (769, 1031), (0, 5), (5, 0)]);
    for kernel in kernels() {
        for (rows, cols) in shapes.clone() {
            seed += 1;
            let mut rng = Rng::new(seed);
            let w = weights(&mut rng, rows, cols);
            let x: Vec<f32> = (0..cols).map(|_| rng.next() as f32).collect();
            let bias: Vec<f32> = (0..rows).map(|_| rng.next() as f32).collect();
            let m = Matrix::from_f32(WeightFormat::F32, rows, cols, &w, Layout::OutIn).unwrap();
            let exact = gemv::reference(&m, &x);
            let mag = magnitude(&m, &x);
            let mut t = vec![0f32; w.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = w[r * cols + c];
                }
            }
            for (data, layout) in [(&w, Layout::OutIn), (&t, Layout::InOut)] {
                let what = format!("{kernel} in place {layout:?} {rows}x{cols}");
                let view = gemv::F32View {
                    data,
                    rows,
                    cols,
                    layout,
                };
                let mut y = vec![f32::NAN; rows];
                gemv::gemv_in_place(kernel, view, &x, &mut y, Some(&bias), false).unwrap();
                let mut y2 = y.clone();
                gemv::gemv_in_place(kernel, view, &x, &mut y2, None, true).unwrap();
                for r in 0..rows {
                    let tol = 1e-5 * mag[r] + 1e-6;
                    let got = y[r] as f64 - bias[r] as f64;
                    assert!(
                        (got - exact[r]).abs() <= tol,
                        "{what}: row {r}: {got} vs oracle {} (tol {tol})",
                        exact[r]
                    );
                    let twice = y2[r] as f64 - bias[r] as f64;
                    assert!(
                        (twice - 2.0 * exact[r]).abs() <= 2.0 * tol + 1e-6 * bias[r].abs() as f64,
                        "{what}: row {r} accumulated: {twice} vs {}",
                        2.0 * exact[r]
                    );
                }
                let mut one = vec![0f32; rows];
                ferrogpt_gemm::serial(|| {
                    gemv::gemv_in_place(kernel, view, &x, &mut one, Some(&bias), false)
                })
                .unwrap();
                assert_eq!(
                    one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{what}: one thread against the pool"
                );
            }
        }
        // Lengths that do not match are errors.
        let view = gemv::F32View {
            data: &[0.0; 12],
            rows: 3,
            cols: 4,
            layout: Layout::InOut,
        };
        let mut y = [0f32; 3];
        assert!(gemv::gemv_in_place(kernel, view, &[0.0; 5], &mut y, None, false).is_err());
        let short = gemv::F32View {
            data: &[0.0; 11],
            ..view
        };
        assert!(gemv::gemv_in_place(kernel, short, &[0.0; 4], &mut y, None, false).is_err());
    }
}

/// Q8_0 has no scale for a NaN or an infinity: converting one to int8 is an error naming the
/// weight (an infinity used to panic inside `from_f32`, a NaN to quantize silently to 0). bf16
/// and f32 keep such values as they are.
#[test]
fn int8_refuses_non_finite_weights() {
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut w = vec![0.5f32; 3 * 40];
        w[2 * 40 + 33] = bad; // (out, in): row 2, column 33
        let err = Matrix::from_f32(WeightFormat::Int8, 3, 40, &w, Layout::OutIn).unwrap_err();
        assert!(err.to_string().contains("(2, 33)"), "{err}");
        // The same weight stored (in, out): input 33's row, output 2's column.
        let t: Vec<f32> = (0..40 * 3).map(|i| w[(i % 3) * 40 + i / 3]).collect();
        let err = Matrix::from_f32(WeightFormat::Int8, 3, 40, &t, Layout::InOut).unwrap_err();
        assert!(err.to_string().contains("(2, 33)"), "{err}");
        for format in [WeightFormat::F32, WeightFormat::Bf16] {
            let m = Matrix::from_f32(format, 3, 40, &w, Layout::OutIn).unwrap();
            let back = m.dequantize()[2 * 40 + 33];
            assert!(
                back == bad || (bad.is_nan() && back.is_nan()),
                "{format}: {back}"
            );
        }
    }
}

/// A NaN or an infinity in the input vector of an int8 product makes every output it reaches
/// non-finite, as in f32 and bf16 (a NaN used to quantize to 0 and vanish): its block's scale
/// carries it. Every output reads every input here, zero weights included (0·NaN is NaN).
#[test]
fn int8_spreads_a_non_finite_input() {
    let (rows, cols) = (9, 70); // three blocks of input, the last partial
    let mut rng = Rng::new(77);
    let mut w = weights(&mut rng, rows, cols);
    w[..cols].fill(0.0); // a row of zeros
    for kernel in kernels() {
        for format in WeightFormat::ALL {
            let m = Matrix::from_f32(format, rows, cols, &w, Layout::OutIn).unwrap();
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, 31, 33, 69] {
                    let mut x: Vec<f32> = (0..cols).map(|_| rng.next() as f32).collect();
                    x[at] = bad;
                    let mut y = vec![0f32; rows];
                    gemv::gemv(kernel, &m, &x, &mut y, None, false).unwrap();
                    for (r, v) in y.iter().enumerate() {
                        assert!(
                            !v.is_finite(),
                            "{kernel} {format}: x[{at}] = {bad} gives row {r} = {v}"
                        );
                    }
                }
            }
        }
    }
    let xq = QuantizedVector::new(&[1.0, f32::NAN, -2.0]);
    assert!(xq.d[0].is_nan(), "{:?}", xq.d);
}
