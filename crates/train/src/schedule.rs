//! Learning-rate schedules: linear warmup, then constant, linear or cosine decay to `min_lr`.

use crate::config::{Schedule, TrainConfig};

/// The learning rate of optimizer step `step` (0-based) of a `cfg.steps`-step run.
///
/// Warmup: `lr · (step+1) / (warmup+1)` for `step < warmup` (nanoGPT's). After it, with
/// `r = (step - warmup) / (steps - warmup)` in [0, 1]: constant `lr`; linear
/// `lr + r·(min_lr - lr)`; cosine `min_lr + ½(1 + cos πr)·(lr - min_lr)`.
pub fn learning_rate(cfg: &TrainConfig, step: usize) -> f64 {
    if step < cfg.warmup {
        return cfg.lr * (step + 1) as f64 / (cfg.warmup + 1) as f64;
    }
    let span = cfg.steps.saturating_sub(cfg.warmup).max(1) as f64;
    let r = ((step - cfg.warmup) as f64 / span).clamp(0.0, 1.0);
    match cfg.lr_schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Linear => cfg.lr + r * (cfg.min_lr - cfg.lr),
        Schedule::Cosine => {
            cfg.min_lr + 0.5 * (1.0 + (std::f64::consts::PI * r).cos()) * (cfg.lr - cfg.min_lr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_min() {
        let cfg = TrainConfig {
            steps: 1100,
            warmup: 100,
            lr: 1e-3,
            min_lr: 1e-4,
            ..TrainConfig::default()
        };
        assert!((learning_rate(&cfg, 0) - 1e-3 / 101.0).abs() < 1e-15);
        assert!((learning_rate(&cfg, 100) - 1e-3).abs() < 1e-15);
        assert!((learning_rate(&cfg, 600) - 5.5e-4).abs() < 1e-12);
        assert!((learning_rate(&cfg, 1100) - 1e-4).abs() < 1e-15);
        let lin = TrainConfig {
            lr_schedule: Schedule::Linear,
            ..cfg.clone()
        };
        assert!((learning_rate(&lin, 600) - 5.5e-4).abs() < 1e-12);
        let c = TrainConfig {
            lr_schedule: Schedule::Constant,
            ..cfg
        };
        assert_eq!(learning_rate(&c, 1000), 1e-3);
    }
}
