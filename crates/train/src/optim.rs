//! Optimizers on the flat parameter buffer, and gradient clipping.
//!
//! * AdamW (Loshchilov & Hutter), PyTorch's formulation: bias-corrected moments and decoupled
//!   weight decay `p -= lr·wd·p`, applied only where the decay mask is set (2-D weights).
//! * SGD with momentum (PyTorch's: `buf = μ·buf + g`, `p -= lr·buf`) and L2 weight decay
//!   (`g += wd·p`) under the same mask.
//!
//! State (moments, step count) uses the parameter layout, so it checkpoints as flat buffers.

use crate::config::{OptimizerKind, TrainConfig};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// The optimizer's state: first and second moments (AdamW) or momentum (SGD, in `m`).
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub m: Vec<f32>,
    /// Empty for SGD.
    pub v: Vec<f32>,
    /// Optimizer steps taken (AdamW's bias correction uses it).
    pub t: u64,
    /// 1.0 where weight decay applies, 0.0 elsewhere: a factor, so the update loops stay
    /// branch-free and vectorise.
    decay: Vec<f32>,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, n: usize, decay: Vec<bool>) -> Self {
        let v = if kind == OptimizerKind::AdamW {
            vec![0.0; n]
        } else {
            Vec::new()
        };
        Optimizer {
            kind,
            m: vec![0.0; n],
            v,
            t: 0,
            decay: decay
                .into_iter()
                .map(|d| if d { 1.0 } else { 0.0 })
                .collect(),
        }
    }

    /// One update of `params` from `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64, cfg: &TrainConfig) {
        self.t += 1;
        let decay = &self.decay;
        match self.kind {
            OptimizerKind::AdamW => {
                let (b1, b2) = (cfg.beta1 as f32, cfg.beta2 as f32);
                let bc1 = 1.0 - cfg.beta1.powi(self.t as i32);
                let bc2 = 1.0 - cfg.beta2.powi(self.t as i32);
                // p -= lr·m̂/(sqrt(v̂)+eps) with m̂ = m/bc1, v̂ = v/bc2, folded into two scalars.
                let step_size = (lr / bc1) as f32;
                let bc2_sqrt = bc2.sqrt() as f32;
                let eps = cfg.eps as f32;
                let wd = (lr * cfg.weight_decay) as f32;
                params
                    .par_chunks_mut(CHUNK)
                    .zip(grads.par_chunks(CHUNK))
                    .zip(self.m.par_chunks_mut(CHUNK))
                    .zip(self.v.par_chunks_mut(CHUNK))
                    .zip(decay.par_chunks(CHUNK))
                    .for_each(|((((p, g), m), v), d)| {
                        let n = p.len();
                        let (g, m, v, d) = (&g[..n], &mut m[..n], &mut v[..n], &d[..n]);
                        for i in 0..n {
                            let gi = g[i];
                            m[i] = b1 * m[i] + (1.0 - b1) * gi;
                            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                            let decay = d[i] * wd;
                            p[i] -=
                                decay * p[i] + step_size * m[i] / (v[i].sqrt() / bc2_sqrt + eps);
                        }
                    });
            }
            OptimizerKind::Sgd => {
                let (mu, wd, lr) = (cfg.momentum as f32, cfg.weight_decay as f32, lr as f32);
                params
                    .par_chunks_mut(CHUNK)
                    .zip(grads.par_chunks(CHUNK))
                    .zip(self.m.par_chunks_mut(CHUNK))
                    .zip(decay.par_chunks(CHUNK))
                    .for_each(|(((p, g), m), d)| {
                        for i in 0..p.len() {
                            let gi = g[i] + d[i] * wd * p[i];
                            m[i] = if mu > 0.0 { mu * m[i] + gi } else { gi };
                            p[i] -= lr * m[i];
                        }
                    });
            }
        }
    }
}

/// The global L2 norm of the gradients (summed in f64).
pub fn global_norm(grads: &[f32]) -> f64 {
    grads
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// Scales the gradients so their global norm is at most `max_norm` (PyTorch's
/// clip_grad_norm_: factor `max_norm / (norm + 1e-6)` when it is below 1). Returns the norm
/// before clipping. `max_norm = 0` only measures.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 {
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            let f = factor as f32;
            grads
                .par_chunks_mut(CHUNK)
                .for_each(|c| c.iter_mut().for_each(|g| *g *= f));
        }
    }
    norm
}
