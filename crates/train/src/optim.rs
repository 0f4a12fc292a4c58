//! Optimizers on the flat parameter buffer, and gradient clipping.
//!
//! * AdamW (Loshchilov & Hutter), PyTorch's formulation: bias-corrected moments and decoupled
//!   weight decay `p -= lr·wd·p`, applied only where the decay mask is set (2-D weights).
//! * SGD with momentum (PyTorch's: `buf = μ·buf + g`, `p -= lr·buf`) and L2 weight decay
//!   (`g += wd·p`) under the same mask.
//!
//! State (moments, step count) uses the parameter layout, so it checkpoints as flat buffers.

use crate::config::{OptimizerKind, TrainConfig};
use ferrogpt_core::reduce::sum_squares_f64;
use rayon::prelude::*;

/// Elements per parallel task of the passes over the flat buffers (the gradient norm's
/// per-chunk sums, which the CPU engine's fused shard sum repeats exactly, use it too).
pub(crate) const CHUNK: usize = 1 << 14;

/// The optimizer's state: first and second moments (AdamW) or momentum (SGD, in `m`).
#[derive(Clone, Debug)]
pub struct Optimizer {
    /// AdamW or SGD: which of the fields below it uses.
    pub kind: OptimizerKind,
    /// AdamW's first moment or SGD's momentum buffer, one per parameter (the flat layout).
    pub m: Vec<f32>,
    /// AdamW's second moment, one per parameter; empty for SGD.
    pub v: Vec<f32>,
    /// Optimizer steps taken (AdamW's bias correction uses it).
    pub t: u64,
    /// Maximal runs `(start, decays)` of parameters with the same decay flag, in order; a run
    /// ends where the next starts (the last at the end of the buffer). A few hundred runs
    /// instead of one flag per parameter: the update streams 4 bytes less per parameter
    /// (0.5 GB a step at gpt2-124m size) and each run's loop has a constant decay.
    runs: Vec<(usize, bool)>,
    n: usize,
}

impl Optimizer {
    /// Zero state for `n` parameters, `t = 0`. `decay[i]`: whether weight decay applies to
    /// parameter `i` (the model's [`decay_mask`](ferrogpt_model::ParamLayout::decay_mask)).
    /// Panics if `decay` does not have `n` flags.
    pub fn new(kind: OptimizerKind, n: usize, decay: Vec<bool>) -> Self {
        let v = if kind == OptimizerKind::AdamW {
            vec![0.0; n]
        } else {
            Vec::new()
        };
        assert_eq!(decay.len(), n, "one decay flag per parameter");
        let mut runs: Vec<(usize, bool)> = Vec::new();
        for (i, &d) in decay.iter().enumerate() {
            if runs.last().is_none_or(|&(_, prev)| prev != d) {
                runs.push((i, d));
            }
        }
        Optimizer {
            kind,
            m: vec![0.0; n],
            v,
            t: 0,
            runs,
            n,
        }
    }
}

/// Decay runs (see [`Optimizer`]'s `runs`) of a buffer of `n` parameters.
struct Runs<'a> {
    runs: &'a [(usize, bool)],
    n: usize,
}

impl Runs<'_> {
    /// Calls `f(lo, hi, decays)` for the parts of `[c0, c1)` with a constant decay flag
    /// (`lo`, `hi` relative to `c0`).
    #[inline(always)]
    fn for_each(&self, c0: usize, c1: usize, mut f: impl FnMut(usize, usize, bool)) {
        let first = self.runs.partition_point(|&(start, _)| start <= c0) - 1;
        for (r, &(start, d)) in self.runs.iter().enumerate().skip(first) {
            let end = self.runs.get(r + 1).map_or(self.n, |&(s, _)| s);
            let (lo, hi) = (start.max(c0), end.min(c1));
            if lo >= c1 {
                break;
            }
            if lo < hi {
                f(lo - c0, hi - c0, d);
            }
        }
    }
}

impl Optimizer {
    /// One update of `params` from `grads · grad_scale` at learning rate `lr` (`grad_scale` is
    /// where gradient clipping's factor goes: folded into this pass instead of a pass of its
    /// own over the gradients). Increments `t` first. Reads `beta1`, `beta2`, `eps`,
    /// `weight_decay` (AdamW) or `momentum`, `weight_decay` (SGD) from `cfg`. Panics if
    /// `params` or `grads` does not have the optimizer's `n` elements.
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        grad_scale: f32,
        lr: f64,
        cfg: &TrainConfig,
    ) {
        assert!(params.len() == self.n && grads.len() == self.n);
        self.t += 1;
        let runs = Runs {
            runs: &self.runs,
            n: self.n,
        };
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
                let (m, v) = (&mut self.m, &mut self.v);
                params
                    .par_chunks_mut(CHUNK)
                    .zip(grads.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .enumerate()
                    .for_each(|(ci, (((p, g), m), v))| {
                        let c0 = ci * CHUNK;
                        // Zipped (no bounds checks) and compiled 16 wide where the CPU can.
                        ferrogpt_core::wide::run(
                            #[inline(always)]
                            || {
                                runs.for_each(
                                    c0,
                                    c0 + p.len(),
                                    #[inline(always)]
                                    |lo, hi, decays| {
                                        let decay = if decays { wd } else { 0.0 };
                                        let (p, g) = (&mut p[lo..hi], &g[lo..hi]);
                                        let (m, v) = (&mut m[lo..hi], &mut v[lo..hi]);
                                        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                                            let gi = g * grad_scale;
                                            *m = b1 * *m + (1.0 - b1) * gi;
                                            *v = b2 * *v + (1.0 - b2) * gi * gi;
                                            *p -= decay * *p
                                                + step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                                        }
                                    },
                                )
                            },
                        );
                    });
            }
            OptimizerKind::Sgd => {
                let (mu, wd, lr) = (cfg.momentum as f32, cfg.weight_decay as f32, lr as f32);
                let m = &mut self.m;
                params
                    .par_chunks_mut(CHUNK)
                    .zip(grads.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .enumerate()
                    .for_each(|(ci, ((p, g), m))| {
                        let c0 = ci * CHUNK;
                        runs.for_each(c0, c0 + p.len(), |lo, hi, decays| {
                            let decay = if decays { wd } else { 0.0 };
                            let (p, g, m) = (&mut p[lo..hi], &g[lo..hi], &mut m[lo..hi]);
                            for i in 0..p.len() {
                                let gi = g[i] * grad_scale + decay * p[i];
                                m[i] = if mu > 0.0 { mu * m[i] + gi } else { gi };
                                p[i] -= lr * m[i];
                            }
                        });
                    });
            }
        }
    }
}

/// The global L2 norm of the gradients (summed in f64).
pub fn global_norm(grads: &[f32]) -> f64 {
    grads
        .par_chunks(CHUNK)
        .map(|c| {
            ferrogpt_core::wide::run(
                #[inline(always)]
                || sum_squares_f64(c),
            )
        })
        .sum::<f64>()
        .sqrt()
}

/// The factor that scales gradients of global norm `norm` to at most `max_norm` (PyTorch's
/// clip_grad_norm_: `max_norm / (norm + 1e-6)` when that is below 1; else 1, and always 1 when
/// `max_norm = 0`, which means no clipping).
pub fn clip_factor(norm: f64, max_norm: f64) -> f32 {
    if max_norm > 0.0 {
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            return factor as f32;
        }
    }
    1.0
}

/// Scales the gradients so their global norm is at most `max_norm` ([`clip_factor`]). Returns
/// the norm before clipping. `max_norm = 0` only measures. (The engines fold the factor into
/// the optimizer's pass instead; this is the plain version.)
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    let f = clip_factor(norm, max_norm);
    if f < 1.0 {
        grads
            .par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|g| *g *= f));
    }
    norm
}
