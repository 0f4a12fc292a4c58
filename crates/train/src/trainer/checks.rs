//! The trainer's checks of what it is given (data against the model, a resumed run's data
//! files against its record, the multiple-choice examples) and the plain evaluation of a token
//! sequence.

use super::TrainError;
use crate::config::TrainConfig;
use crate::data::{DataError, DataRole, DataSource, Dataset};
use crate::engine::Engine;
use crate::mc_eval::McExample;
use ferrogpt_model::Gpt;
use std::path::Path;

/// Reads `cfg.eval_mc`, checked against the model: every row within the block size, every id
/// within the vocabulary.
pub(super) fn read_mc(
    cfg: &TrainConfig,
    model: &Gpt,
) -> Result<Option<Vec<McExample>>, TrainError> {
    let Some(path) = &cfg.eval_mc else {
        return Ok(None);
    };
    let examples = crate::mc_eval::read(Path::new(path))?;
    let (block, vocab) = (model.config.block_size, model.config.vocab_size);
    for (i, e) in examples.iter().enumerate() {
        if e.longest_row() > block + 1 {
            return Err(TrainError::McTooLong {
                path: path.clone(),
                example: i,
                tokens: e.longest_row(),
                block,
            });
        }
        let ids = e.context.iter().chain(e.completions.iter().flatten());
        if let Some(id) = ids.copied().find(|&id| id as usize >= vocab) {
            return Err(TrainError::McTokenId {
                path: path.clone(),
                example: i,
                id,
                vocab,
            });
        }
    }
    Ok(Some(examples))
}

/// The data of a resumed run against the files its checkpoint recorded: each recorded file
/// must be there again (by role) with the same SHA-256.
pub(super) fn check_sources(recorded: &[DataSource], now: &[DataSource]) -> Result<(), TrainError> {
    for role in [crate::data::DataRole::Train, crate::data::DataRole::Val] {
        let before: Vec<&DataSource> = recorded.iter().filter(|r| r.role == role).collect();
        let after: Vec<&DataSource> = now.iter().filter(|n| n.role == role).collect();
        if before.is_empty() {
            continue;
        }
        if after.is_empty() {
            return Err(TrainError::MissingData {
                recorded: Box::new(before[0].clone()),
            });
        }
        if let Some((r, n)) = before
            .iter()
            .zip(&after)
            .find(|(r, n)| r.sha256 != n.sha256)
        {
            return Err(DataError::Changed {
                found: Box::new((*n).clone()),
                recorded: Box::new((*r).clone()),
            }
            .into());
        }
        if before.len() != after.len() {
            return Err(TrainError::DataFiles {
                role,
                recorded: before.len(),
                given: after.len(),
            });
        }
    }
    Ok(())
}

/// The run's data against its model: at least one window of `seq_len` + 1 tokens (the
/// validation data may be empty), every id within the vocabulary.
pub(super) fn check_data(cfg: &TrainConfig, model: &Gpt, data: &Dataset) -> Result<(), TrainError> {
    if data.train_shards.is_some() {
        // Shards are not read whole: the loader checks their lengths, the engine every id.
        return Ok(());
    }
    crate::data::check_len(&data.train, cfg.seq_len, "the training data")?;
    if !data.val.is_empty() {
        crate::data::check_len(&data.val, cfg.seq_len, "the validation data")?;
    }
    for (role, toks) in [(DataRole::Train, &data.train), (DataRole::Val, &data.val)] {
        if let Some(&id) = toks
            .iter()
            .find(|&&id| id as usize >= model.config.vocab_size)
        {
            return Err(TrainError::TokenId {
                role,
                id,
                vocab: model.config.vocab_size,
            });
        }
    }
    Ok(())
}

/// Mean loss of the model on `engine` over `tokens`, in consecutive non-overlapping windows of
/// `t` tokens (targets shifted by one), `b` windows a batch, at most `max_windows` windows
/// (0 = all). Returns (mean loss, windows evaluated). Errors: fewer than `t + 1` tokens
/// ([`DataError::TooFewTokens`]), the engine's.
pub fn evaluate_tokens(
    engine: &mut dyn Engine,
    tokens: &[u32],
    b: usize,
    t: usize,
    max_windows: usize,
) -> Result<(f64, usize), TrainError> {
    if tokens.len() < t + 1 {
        return Err(DataError::TooFewTokens {
            what: "the data".into(),
            needed: t + 1,
            found: tokens.len(),
        }
        .into());
    }
    let mut windows = (tokens.len() - 1) / t;
    if max_windows > 0 {
        windows = windows.min(max_windows);
    }
    let mut total = 0.0;
    let mut w = 0;
    while w < windows {
        let nb = b.min(windows - w);
        let mut inputs = Vec::with_capacity(nb * t);
        let mut targets = Vec::with_capacity(nb * t);
        for i in w..w + nb {
            inputs.extend_from_slice(&tokens[i * t..i * t + t]);
            targets.extend_from_slice(&tokens[i * t + 1..i * t + t + 1]);
        }
        // One batch at a time: the engine's working memory stays that of one batch.
        let loss = engine.losses(&[(inputs, targets)], t)?[0];
        total += loss * nb as f64;
        w += nb;
    }
    Ok((total / windows as f64, windows))
}
