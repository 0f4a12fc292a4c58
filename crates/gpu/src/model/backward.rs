//! The backward pass: `forward.rs`'s layers in reverse, each method the backward of the
//! forward method of the same name. Activation gradients are written (each buffer of the
//! shared scratch is overwritten by the layer that produces it; `dres`, the residual
//! stream's, is added to by each norm's backward); parameter gradients accumulate
//! (`+=`) into the f32 gradient buffer, so micro-batches add up until `zero_grads`.
//!
//! Bias and norm-weight gradients are column sums over the N rows, done without atomics in a
//! fixed order (partial sums, then their sum), so every run gives the same bits.

use ferrogpt_core::Param;
use ferrogpt_cuda::CudaError;
use ferrogpt_model::config::Family;
use ferrogpt_model::params::BlockParams;

use super::acts::{Acts, AttnBufs, Batch, LayerActs, NormStats, PART_FLOATS};
use super::forward::{block_site, Pass};
use super::launch::{self, LnStats};
use super::GpuModel;
use crate::raw::{DevPtr, Mat, X};

impl GpuModel {
    /// The backward pass of the forward just run (`dscale` ≠ 0, so dlogits is in `logits`),
    /// on the same `ps`, for a batch of `u` distinct tokens: adds every parameter's gradient.
    pub(super) fn backward(&self, ps: Pass, u: usize) -> Result<(), CudaError> {
        let a = self.acts.as_ref().expect("forward ran");
        let last = a.layers.last().map_or(a.x0, |la| la.res3);
        self.head_backward(a, last, ps)?;
        // dres holds ∂loss/∂(residual stream) from here on.
        for (li, (blk, la)) in self.layout.blocks.iter().zip(&a.layers).enumerate().rev() {
            let resid = if li == 0 { a.x0 } else { a.layers[li - 1].res3 };
            self.mlp_backward(a, blk, la, ps, block_site(li))?;
            self.attn_backward(a, blk, la, resid, ps, block_site(li))?;
        }
        self.embed_backward(a, &a.batch(ps.n, u), ps)
    }

    /// LM head: dlnf (N, C) = dlogits · head, dhead += dlogitsᵀ · lnf (head = wte when tied;
    /// an untied head takes this gradient and wte only the embedding's); then the final norm:
    /// dres (written) from dlnf, `resid` being its input.
    fn head_backward(&self, a: &Acts, resid: DevPtr<X>, ps: Pass) -> Result<(), CudaError> {
        let (d, l, n) = (&self.dev, &self.layout, ps.n);
        let (c, vp) = (self.config.n_embd, self.config.padded_vocab_size);
        let head = Mat::x(self.w(l.head()));
        d.gemm(Mat::x(a.dln), Mat::x(a.logits), head, n, c, vp, 0.0)?;
        let dhead = Mat::f32(self.g(l.head()));
        d.gemm(dhead, Mat::x(a.logits).t(), Mat::x(a.lnf), vp, c, n, 1.0)?;
        self.norm_backward(a.dres, a.dln, resid, l.ln_f_w, l.ln_f_b, a.lnf_s, n, false)
    }

    /// MLP: res3 = res2 + drop(fcproj(act(fc(norm2(res2))))); dres += its gradient.
    fn mlp_backward(
        &self,
        a: &Acts,
        blk: &BlockParams,
        la: &LayerActs,
        ps: Pass,
        site: u64,
    ) -> Result<(), CudaError> {
        let (d, n, c, f) = (&self.dev, ps.n, self.config.n_embd, self.config.ffn());
        // Recomputation: fch_act (and ln2) are shared buffers holding another block's values.
        if a.recompute >= 1 {
            match self.config.family {
                Family::Gpt2 => launch::gelu_forward(d, la.fch_act, la.fch, n * f)?,
                Family::Llama => launch::swiglu_forward(d, la.fch_act, la.fch, n, f)?,
            }
        }
        if a.recompute >= 2 {
            self.norm_forward(la.ln2, la.ln2_s, la.res2, blk.ln_2_w, blk.ln_2_b, n)?;
        }
        let dproj = self.residual_dropout_backward(a, ps, site + 2)?;
        let (w, b) = (blk.fc_proj_w, blk.fc_proj_b);
        match self.config.family {
            Family::Gpt2 => {
                self.linear_backward(a.dfc, dproj, la.fch_act, w, b, n, f, c)?;
                launch::gelu_backward(d, a.dfc, la.fch, a.dfc, n * f)?;
                self.linear_backward(a.dln, a.dfc, la.ln2, blk.fc_w, blk.fc_b, n, c, f)?;
            }
            Family::Llama => {
                self.linear_backward(a.dact, dproj, la.fch_act, w, b, n, f, c)?;
                launch::swiglu_backward(d, a.dfc, a.dact, la.fch, n, f)?;
                self.linear_backward(a.dln, a.dfc, la.ln2, blk.fc_w, blk.fc_b, n, c, 2 * f)?;
            }
        }
        let (w, b) = (blk.ln_2_w, blk.ln_2_b);
        self.norm_backward(a.dres, a.dln, la.res2, w, b, la.ln2_s, n, true)
    }

    /// Attention: res2 = resid + drop(proj(attn(rope(qkv(norm1(resid)))))); dres += its
    /// gradient.
    fn attn_backward(
        &self,
        a: &Acts,
        blk: &BlockParams,
        la: &LayerActs,
        resid: DevPtr<X>,
        ps: Pass,
        site: u64,
    ) -> Result<(), CudaError> {
        let (n, c, w) = (ps.n, self.config.n_embd, self.config.qkv_width());
        if a.recompute >= 2 {
            self.norm_forward(la.ln1, la.ln1_s, resid, blk.ln_1_w, blk.ln_1_b, n)?;
        }
        let dproj = self.residual_dropout_backward(a, ps, site + 1)?;
        let (pw, pb) = (blk.attn_proj_w, blk.attn_proj_b);
        self.linear_backward(a.dln, dproj, la.atty, pw, pb, n, c, c)?;
        self.attention_backward(&a.attn(la), ps, ps.seed(site))?;
        if let Some(r) = self.rope() {
            // dqkv is the gradient of the rotated q, k: turn it back.
            launch::rope(&self.dev, a.dqkv, r, n, ps.t, true, None)?;
        }
        self.linear_backward(a.dln, a.dqkv, la.ln1, blk.attn_w, blk.attn_b, n, c, w)?;
        let (nw, nb) = (blk.ln_1_w, blk.ln_1_b);
        self.norm_backward(a.dres, a.dln, resid, nw, nb, la.ln1_s, n, true)
    }

    /// Embeddings: x0 = drop(wte[tok] + wpe[t]); dwte (and dwpe, with learned positions) +=
    /// from dres.
    fn embed_backward(&self, a: &Acts, batch: &Batch, ps: Pass) -> Result<(), CudaError> {
        let (d, l) = (&self.dev, &self.layout);
        let (n, t, c, p) = (ps.n, ps.t, self.config.n_embd, ps.p);
        let seed = ps.seed(0);
        let (order, starts, utok) = (batch.order, batch.starts, batch.utok);
        let dwte = self.g(l.wte);
        // SAFETY: upload_batch grouped the batch's positions by token, ids below the
        // vocabulary, within wte's rows.
        unsafe {
            launch::encoder_backward_wte(d, dwte, a.dres, order, starts, utok, c, p, seed)?;
        }
        match l.wpe {
            Some(wpe) => launch::encoder_backward_wpe(d, self.g(wpe), a.dres, n / t, t, c, p, seed),
            None => Ok(()),
        }
    }

    /// The gradient of a residual branch before its dropout: dres through the mask of
    /// `site` into `dtmp`, or dres itself without dropout.
    fn residual_dropout_backward(
        &self,
        a: &Acts,
        ps: Pass,
        site: u64,
    ) -> Result<DevPtr<X>, CudaError> {
        if ps.p == 0.0 {
            return Ok(a.dres);
        }
        let len = ps.n * self.config.n_embd;
        launch::dropout_backward(&self.dev, a.dtmp, a.dres, len, ps.p, ps.seed(site))?;
        Ok(a.dtmp)
    }

    /// Backward of `linear`: dinp (N, IC) = dout · Wᵀ (written), dW += inpᵀ · dout,
    /// db += Σ_n dout (column sums without atomics). W (IC, OC) as `linear` reads it: with
    /// (OC, IC) storage (Llama) the products are dinp = dout · W and dW += doutᵀ · inp.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        dinp: DevPtr<X>,
        dout: DevPtr<X>,
        inp: DevPtr<X>,
        w: Param,
        bias: Option<Param>,
        n: usize,
        ic: usize,
        oc: usize,
    ) -> Result<(), CudaError> {
        let d = &self.dev;
        let (wm, dw) = (Mat::x(self.w(w)), Mat::f32(self.g(w)));
        if self.layout.weights_out_in {
            d.gemm(Mat::x(dinp), Mat::x(dout), wm, n, ic, oc, 0.0)?;
            d.gemm(dw, Mat::x(dout).t(), Mat::x(inp), oc, ic, n, 1.0)?;
        } else {
            d.gemm(Mat::x(dinp), Mat::x(dout), wm.t(), n, ic, oc, 0.0)?;
            d.gemm(dw, Mat::x(inp).t(), Mat::x(dout), ic, oc, n, 1.0)?;
        }
        if let Some(bp) = bias {
            self.col_sums(Some(self.g(bp)), None, dout, n, oc)?;
        }
        Ok(())
    }

    /// The family's norm backward: dinp = (accumulate ? dinp + : ) norm'(dout); dw (and db,
    /// LayerNorm) += .
    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &self,
        dinp: DevPtr<X>,
        dout: DevPtr<X>,
        inp: DevPtr<X>,
        w: Param,
        b: Option<Param>,
        s: NormStats,
        n: usize,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let (d, c, wx, rstd) = (&self.dev, self.config.n_embd, self.w(w), s.rstd);
        let db = match (b, s.mean) {
            (Some(b), Some(mean)) => {
                launch::layernorm_backward(d, dinp, dout, inp, wx, mean, rstd, n, c, accumulate)?;
                Some(self.g(b))
            }
            _ => {
                launch::rmsnorm_backward(d, dinp, dout, inp, wx, rstd, n, c, accumulate)?;
                None
            }
        };
        let ln = LnStats {
            inp,
            mean: s.mean,
            rstd,
        };
        self.col_sums(db, Some((self.g(w), ln)), dout, n, c)
    }

    /// db (C) += Σ_n dout[n, :] (when given); with `ln`, also dw (C) += Σ_n dout·xhat, xhat
    /// from the norm's input and statistics.
    fn col_sums(
        &self,
        db: Option<DevPtr<f32>>,
        ln: Option<(DevPtr<f32>, LnStats)>,
        dout: DevPtr<X>,
        n: usize,
        c: usize,
    ) -> Result<(), CudaError> {
        let a = self.acts.as_ref().expect("activations");
        // Enough partial sums to fill the GPU (about 64k threads of one vector column each;
        // fewer, longer partials measured slower: see docs/benchmarks.md), within the
        // scratch buffer.
        let vec = 16 / self.dev.dtype.size();
        let want = (65_536 * vec / c).clamp(1, (PART_FLOATS / (2 * c)).min(65_535));
        let rows_per = n.div_ceil(want).max(1);
        let parts = n.div_ceil(rows_per);
        let threads = (c / vec).next_multiple_of(32).min(128);
        let d = &self.dev;
        let stats = ln.map(|(_, s)| s);
        launch::col_partials(d, a.part, dout, stats, n, c, rows_per, parts, threads)?;
        if let Some(db) = db {
            launch::reduce_partials(d, db, a.part, parts, c)?;
        }
        if let Some((dw, _)) = ln {
            launch::reduce_partials(d, dw, a.part.slice(parts * c, parts * c), parts, c)?;
        }
        Ok(())
    }

    /// The fused attention's backward: dqkv (written) from dout, out, qkv and lse, with the
    /// same dropout masks (`seed`) as the forward. D = rowsum(dout ∘ out) goes to `ab.delta`:
    /// the tensor-core path computes it first, the CUDA-core dq kernel computes it itself.
    pub(super) fn attention_backward(
        &self,
        ab: &AttnBufs,
        ps: Pass,
        seed: u64,
    ) -> Result<(), CudaError> {
        let (d, f) = (&self.dev, self.flash());
        let (n, t, p) = (ps.n, ps.t, ps.p);
        if f.tc {
            f.tc_delta(d, ab.delta, ab.dout, ab.out, n, t)?;
        }
        f.backward_dq(
            d, ab.dqkv, ab.delta, ab.dout, ab.out, ab.qkv, ab.lse, n, t, p, seed,
        )?;
        f.backward_dkdv(d, ab.dqkv, ab.delta, ab.dout, ab.qkv, ab.lse, n, t, p, seed)
    }
}
