//! A model's weight matrices packed once for the tape's products (see
//! [`ferrogpt_gemm::PackedB`]).
//!
//! Each weight W (a [`Param`], stored rows × cols) is the B operand of two products of the linear
//! layer: the forward product reads op(W) and the input gradient op(W)ᵀ. Stored W is read with
//! `tb = false` (k = rows, n = cols) by one of them and with `tb = true` (k = cols, n = rows) by
//! the other, whichever way the layer uses it, so both packings are kept, keyed by (W, tb).
//!
//! A snapshot of the parameters: whoever owns them makes a new one after every change (the
//! CPU engine does so after each optimizer step) and hands it to each tape with
//! [`crate::Tape::set_packed`]; all of a step's data-parallel shards share one.

use crate::{Float, Level, Param};
use ferrogpt_gemm::{GemmError, PackedB};
use std::collections::HashMap;

/// Packed copies of weight matrices for one matmul level.
pub struct PackedWeights<T> {
    level: Level,
    entries: HashMap<(usize, bool), (Param, PackedB<T>)>,
}

impl<T: Float> PackedWeights<T> {
    /// Packs each of `weights` (ranges of `params`) both ways for `level`. `Ok(None)`: the level
    /// has no packed form (it reads B in place). Errors: the level is unavailable, or a weight
    /// lies outside `params`.
    pub fn new(level: Level, params: &[T], weights: &[Param]) -> Result<Option<Self>, GemmError> {
        let mut entries = HashMap::new();
        for &w in weights {
            let stored = weight(params, w)?;
            for tb in [false, true] {
                let (k, n) = if tb {
                    (w.cols, w.rows)
                } else {
                    (w.rows, w.cols)
                };
                match PackedB::new(level, tb, k, n, stored, w.cols)? {
                    Some(pb) => entries.insert((w.offset, tb), (w, pb)),
                    None => return Ok(None),
                };
            }
        }
        Ok(Some(PackedWeights { level, entries }))
    }

    /// Packs the same weights again from new values of `params` (same layout), into the
    /// buffers they occupy. Errors: a weight lies outside `params`.
    pub fn repack(&mut self, params: &[T]) -> Result<(), GemmError> {
        for (w, pb) in self.entries.values_mut() {
            pb.repack(weight(params, *w)?, w.cols)?;
        }
        Ok(())
    }

    /// The level the weights were packed for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// W packed as op(W) = W (`tb == false`) or Wᵀ (`tb == true`), if W is one of the weights.
    pub fn get(&self, w: Param, tb: bool) -> Option<&PackedB<T>> {
        self.entries
            .get(&(w.offset, tb))
            .filter(|(p, _)| *p == w)
            .map(|(_, pb)| pb)
    }

    /// Bytes held by all the packed copies.
    pub fn bytes(&self) -> usize {
        self.entries.values().map(|(_, pb)| pb.bytes()).sum()
    }
}

/// W's values in `params`, or an error if W lies outside them.
fn weight<T>(params: &[T], w: Param) -> Result<&[T], GemmError> {
    params.get(w.range()).ok_or_else(|| {
        GemmError::Shape(format!(
            "a weight at {}..{} outside {} parameters",
            w.offset,
            w.offset + w.len(),
            params.len()
        ))
    })
}
