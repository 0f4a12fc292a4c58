//! The tape's ops refuse shapes that do not fit with a panic that names them, in release builds
//! too: no rows silently left out, no "consistent by construction" from deep inside a product.

use ferrogpt_core::{Level, Param, Tape};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

fn tape() -> Tape<f32> {
    Tape::new(Level::Naive).expect("the naive level is always available")
}

/// 5 rows of qkv (NH = 1, HS = 2, width 6) cannot be 2 sequences: the op used to attend over
/// 2·2 rows and leave the fifth unwritten.
#[test]
#[should_panic(expected = "attention: 5 rows do not split into b = 2 sequences")]
fn attention_rows_not_a_multiple_of_b() {
    let mut tape = tape();
    let qkv = tape.input(&[0.5; 5 * 6], 5, 6);
    tape.attention(qkv, 2, 1, 0.0, &mut Rng64::seed_from_u64(1));
}

#[test]
#[should_panic(expected = "attention: 4 rows do not split into b = 0 sequences")]
fn attention_zero_sequences() {
    let mut tape = tape();
    let qkv = tape.input(&[0.5; 4 * 8], 4, 8); // NH = 2, KV = 1, HS = 2
    tape.attention_gqa(qkv, 0, 2, 1, 0.0, &mut Rng64::seed_from_u64(1));
}

/// x (3, 4) against W (5, 2): one row too many, which the product used to read past quietly.
#[test]
#[should_panic(expected = "linear: input (3, 4) needs a weight (IC, OC) with IC = 4, got (5, 2)")]
fn linear_weight_rows_vs_input_width() {
    let mut tape = tape();
    let params = vec![0.1f32; 10];
    let x = tape.input(&[1.0; 12], 3, 4);
    tape.linear(
        &params,
        x,
        Param {
            offset: 0,
            rows: 5,
            cols: 2,
        },
        None,
        false,
    );
}

#[test]
#[should_panic(expected = "linear: input (3, 4) needs a weight (OC, IC) with IC = 4, got (2, 5)")]
fn linear_transposed_weight_cols_vs_input_width() {
    let mut tape = tape();
    let params = vec![0.1f32; 10];
    let x = tape.input(&[1.0; 12], 3, 4);
    tape.linear(
        &params,
        x,
        Param {
            offset: 0,
            rows: 2,
            cols: 5,
        },
        None,
        true,
    );
}

#[test]
#[should_panic(expected = "linear: weight (4, 2) has OC = 2 outputs, the bias has 3 values")]
fn linear_bias_vs_outputs() {
    let mut tape = tape();
    let params = vec![0.1f32; 11];
    let x = tape.input(&[1.0; 12], 3, 4);
    let w = Param {
        offset: 0,
        rows: 4,
        cols: 2,
    };
    let b = Param {
        offset: 8,
        rows: 1,
        cols: 3,
    };
    tape.linear(&params, x, w, Some(b), false);
}

/// The shapes that fit still run: x (3, 4) · W (4, 2) + b.
#[test]
fn linear_that_fits() {
    let mut tape = tape();
    let params: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let x = tape.input(&[1.0; 12], 3, 4);
    let w = Param {
        offset: 0,
        rows: 4,
        cols: 2,
    };
    let b = Param {
        offset: 8,
        rows: 1,
        cols: 2,
    };
    let y = tape.linear(&params, x, w, Some(b), false);
    // Column 0: 0 + 2 + 4 + 6 + 8 = 20; column 1: 1 + 3 + 5 + 7 + 9 = 25.
    assert_eq!(tape.value(y), &[20.0, 25.0, 20.0, 25.0, 20.0, 25.0]);
}
