//! The activation memory plan: every activation, activation gradient and scratch buffer of a
//! pass in one allocation, sized for up to `cap` rows (N = B·T ≤ cap), seen through typed
//! views. Shapes use N = B·T, C, NH, Vp, W = (NH + 2·KV)·HS (the packed qkv), F (the MLP's
//! hidden width) and FC = F (GELU) or 2F (SwiGLU's [gate | up]); `X` is the model's floatX.
//!
//! The forward pass writes each block's activations into that block's [`LayerActs`]; the
//! backward pass reads them back and works in one shared set of gradient buffers (`dres`,
//! `dtmp`, `dfc`, `dact`, `dqkv`, `dln`), which each block's backward reuses.
//!
//! Recomputation (`--recompute`, llm.c's `-r`): at level 1 every block's `fch_act` (the MLP's
//! activation output, F wide) is one shared buffer, and the backward pass recomputes it from
//! `fch`; at level 2 `ln1` and `ln2` (the norms' outputs) share one buffer too and are
//! recomputed from the saved statistics' inputs. A GPT-2 block then keeps 10·C values per row
//! instead of 16·C. The views alias; the forward code does not change.

use ferrogpt_cuda::CudaError;
use ferrogpt_model::config::Family;
use ferrogpt_model::GptConfig;

use crate::raw::{Buf, Dev, DevPtr, Elem, X};
use crate::Dtype;

/// Room for the column partial sums of `col_sums` (db and dw: 2 × parts × C ≤ this).
pub(super) const PART_FLOATS: usize = 1 << 20;

/// Views handed out from one allocation at `base`, each 256-byte aligned.
struct Arena {
    base: u64,
    bytes: usize,
    dtype: Dtype,
}

impl Arena {
    fn take<T: Elem>(&mut self, elems: usize) -> DevPtr<T> {
        // SAFETY: the second pass of Acts::new lays out the same views on an allocation of
        // the first pass's size, and Acts keeps that allocation; the first pass's views
        // (base 0) are only counted, never used.
        let p = unsafe { DevPtr::from_raw(self.base + self.bytes as u64, elems, self.dtype) };
        self.bytes += (elems * T::size(self.dtype)).div_ceil(256) * 256;
        p
    }
}

/// A norm's saved statistics: rstd (N), and the mean (N) for a LayerNorm (None: RMSNorm).
#[derive(Clone, Copy)]
pub(super) struct NormStats {
    pub mean: Option<DevPtr<f32>>,
    pub rstd: DevPtr<f32>,
}

/// Activations of one block.
#[derive(Clone, Copy)]
pub(super) struct LayerActs {
    pub ln1: DevPtr<X>,     // (N, C)
    pub ln1_s: NormStats,   // (N) each
    pub qkv: DevPtr<X>,     // (N, W): q and k rotated with rotary positions
    pub atty: DevPtr<X>,    // (N, C)
    pub lse: DevPtr<f32>,   // (B, NH, T)
    pub res2: DevPtr<X>,    // (N, C): residual after attention
    pub ln2: DevPtr<X>,     // (N, C)
    pub ln2_s: NormStats,   // (N) each
    pub fch: DevPtr<X>,     // (N, FC): before the activation
    pub fch_act: DevPtr<X>, // (N, F): after GELU or SwiGLU
    pub res3: DevPtr<X>,    // (N, C): residual after the MLP (the next block's input)
}

/// Every activation and scratch buffer for up to `cap` rows.
pub(super) struct Acts {
    pub cap: usize,
    /// The recomputation level these buffers were laid out for (0, 1 or 2; see the module doc).
    pub recompute: u8,
    pub layers: Vec<LayerActs>,
    pub x0: DevPtr<X>,       // (N, C): embeddings
    pub lnf: DevPtr<X>,      // (N, C)
    pub lnf_s: NormStats,    // (N) each
    pub logits: DevPtr<X>,   // (N, Vp); overwritten by dlogits in training
    pub losses: DevPtr<f32>, // (N)
    pub proj: DevPtr<X>,     // (N, C): output of a projection before the residual add
    // backward scratch
    pub dres: DevPtr<X>,    // (N, C): gradient of the residual stream
    pub dtmp: DevPtr<X>,    // (N, C)
    pub dfc: DevPtr<X>,     // (N, FC)
    pub dact: DevPtr<X>,    // (N, F) with SwiGLU (its output's gradient); empty with GELU
    pub dqkv: DevPtr<X>,    // (N, W)
    pub dln: DevPtr<X>,     // (N, C)
    pub delta: DevPtr<f32>, // (B, NH, T): attention's D
    pub part: DevPtr<f32>,  // (PART_FLOATS): column partial sums
    ints: DevPtr<i32>,      // (5N + 1): the batch, see `Batch`
    /// The allocation every view above points into (None only while planning).
    _buf: Option<Buf<u8>>,
}

/// Device views of one attention call: qkv (N, W), out (N, C), lse and delta (B, NH, T)
/// f32, dout (N, C) and dqkv (N, W).
pub(super) struct AttnBufs {
    pub qkv: DevPtr<X>,
    pub out: DevPtr<X>,
    pub lse: DevPtr<f32>,
    pub delta: DevPtr<f32>,
    pub dout: DevPtr<X>,
    pub dqkv: DevPtr<X>,
}

/// The batch's ids on the device (i32): tokens and targets (N each, row-major (B, T)), and
/// for the embedding backward the positions ordered by token (N), the `u` distinct tokens
/// and where each one's positions start in `order` (u + 1, the last N).
pub(super) struct Batch {
    pub tokens: DevPtr<i32>,
    pub targets: DevPtr<i32>,
    pub order: DevPtr<i32>,
    pub utok: DevPtr<i32>,
    pub starts: DevPtr<i32>,
}

impl Acts {
    pub fn new(dev: &Dev, cfg: &GptConfig, cap: usize, recompute: u8) -> Result<Acts, CudaError> {
        // Lay the views out once to learn the size, then again on an allocation of that size.
        let bytes = Acts::bytes(cfg, cap, recompute, dev.dtype);
        let buf = Buf::new(dev, bytes)?;
        let (mut acts, _) = Acts::plan(cfg, cap, recompute, buf.ptr().addr(), dev.dtype);
        acts._buf = Some(buf);
        Ok(acts)
    }

    /// The size of the allocation for `cap` rows at recomputation level `recompute`.
    pub fn bytes(cfg: &GptConfig, cap: usize, recompute: u8, dtype: Dtype) -> usize {
        Acts::plan(cfg, cap, recompute, 0, dtype).1
    }

    fn plan(cfg: &GptConfig, cap: usize, recompute: u8, base: u64, dtype: Dtype) -> (Acts, usize) {
        let (n, c, nh, w, f) = (cap, cfg.n_embd, cfg.n_head, cfg.qkv_width(), cfg.ffn());
        let swiglu = cfg.family == Family::Llama;
        let fc = if swiglu { 2 * f } else { f };
        let layernorm = cfg.family == Family::Gpt2;
        let mut a = Arena {
            base,
            bytes: 0,
            dtype,
        };
        let stats = |a: &mut Arena| NormStats {
            mean: layernorm.then(|| a.take(n)),
            rstd: a.take(n),
        };
        // The buffers recomputation shares between blocks (never used when not recomputed).
        let shared_act: DevPtr<X> = a.take(if recompute >= 1 { n * f } else { 0 });
        let shared_ln: DevPtr<X> = a.take(if recompute >= 2 { n * c } else { 0 });
        let act = |a: &mut Arena| {
            if recompute >= 1 {
                shared_act
            } else {
                a.take(n * f)
            }
        };
        let ln = |a: &mut Arena| {
            if recompute >= 2 {
                shared_ln
            } else {
                a.take(n * c)
            }
        };
        let layers = (0..cfg.n_layer)
            .map(|_| LayerActs {
                ln1: ln(&mut a),
                ln1_s: stats(&mut a),
                qkv: a.take(n * w),
                atty: a.take(n * c),
                lse: a.take(n * nh),
                res2: a.take(n * c),
                ln2: ln(&mut a),
                ln2_s: stats(&mut a),
                fch: a.take(n * fc),
                fch_act: act(&mut a),
                res3: a.take(n * c),
            })
            .collect();
        let acts = Acts {
            cap,
            recompute,
            layers,
            x0: a.take(n * c),
            lnf: a.take(n * c),
            lnf_s: stats(&mut a),
            logits: a.take(n * cfg.padded_vocab_size),
            losses: a.take(n),
            proj: a.take(n * c),
            dres: a.take(n * c),
            dtmp: a.take(n * c),
            dfc: a.take(n * fc),
            dact: a.take(if swiglu { n * f } else { 0 }),
            dqkv: a.take(n * w),
            dln: a.take(n * c),
            delta: a.take(n * nh),
            part: a.take(PART_FLOATS),
            ints: a.take(5 * n + 1),
            _buf: None,
        };
        (acts, a.bytes)
    }

    /// Block `la`'s attention buffers; the gradient side in the shared backward scratch
    /// (dout in `dln`, where the output projection's backward leaves it).
    pub fn attn(&self, la: &LayerActs) -> AttnBufs {
        AttnBufs {
            qkv: la.qkv,
            out: la.atty,
            lse: la.lse,
            delta: self.delta,
            dout: self.dln,
            dqkv: self.dqkv,
        }
    }

    /// The views of a batch of `n` ids with `u` distinct tokens (see [`Batch`]).
    pub fn batch(&self, n: usize, u: usize) -> Batch {
        let i = self.ints;
        Batch {
            tokens: i.slice(0, n),
            targets: i.slice(n, n),
            order: i.slice(2 * n, n),
            utok: i.slice(3 * n, u),
            starts: i.slice(3 * n + u, u + 1),
        }
    }

    /// Uploads tokens and targets (B·T ids, row-major (B, T); targets 0 when None) and, when
    /// `backward` (for the embedding backward), the positions sorted by token. Returns the
    /// number of distinct ids (0 without `backward`). Errors: an id not below `vocab`.
    pub fn upload_batch(
        &self,
        dev: &Dev,
        vocab: usize,
        tokens: &[u32],
        targets: Option<&[u32]>,
        backward: bool,
    ) -> Result<usize, CudaError> {
        let (n, v) = (tokens.len(), vocab);
        for (what, ids) in [("input", tokens), ("target", targets.unwrap_or(&[]))] {
            if let Some((i, t)) = ids.iter().enumerate().find(|(_, &t)| t as usize >= v) {
                return Err(CudaError::Input(format!(
                    "{what} token id {t} at position {i} is beyond the vocabulary ({v} tokens)"
                )));
            }
        }
        let mut ints: Vec<i32> = Vec::with_capacity(5 * n + 1);
        ints.extend(tokens.iter().map(|&x| x as i32));
        match targets {
            Some(y) => ints.extend(y.iter().map(|&x| x as i32)),
            None => ints.extend(std::iter::repeat_n(0, n)),
        }
        // Positions grouped by token, in order within a token: a counting sort, O(N + V), as
        // it runs on the critical path of every step (a comparison sort was measurably slower
        // there: see docs/benchmarks.md).
        if !backward {
            dev.htod(self.ints, &ints)?;
            return Ok(0);
        }
        let mut count = vec![0i32; v + 1];
        for &t in tokens {
            count[t as usize + 1] += 1;
        }
        let (mut utok, mut starts) = (Vec::new(), Vec::new());
        for t in 0..v {
            if count[t + 1] > 0 {
                utok.push(t as i32);
                starts.push(count[t]);
            }
            count[t + 1] += count[t];
        }
        starts.push(n as i32);
        let mut order = vec![0i32; n];
        for (i, &t) in tokens.iter().enumerate() {
            let slot = &mut count[t as usize];
            order[*slot as usize] = i as i32;
            *slot += 1;
        }
        let u = utok.len();
        ints.extend(order);
        ints.extend(utok);
        ints.extend(starts);
        dev.htod(self.ints, &ints)?;
        Ok(u)
    }
}
