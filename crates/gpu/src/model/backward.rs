//! The backward pass: `forward.rs`'s layers in reverse, each method the backward of the
//! forward method of the same name. Activation gradients are written (each buffer of the
//! shared scratch is overwritten by the layer that produces it; `dres`, the residual
//! stream's, is added to by each LayerNorm's backward); parameter gradients accumulate
//! (`+=`) into the f32 gradient buffer, so micro-batches add up until `zero_grads`.
//!
//! Bias and LayerNorm-weight gradients are column sums over the N rows, done without
//! atomics in a fixed order (partial sums, then their sum), so every run gives the same bits.

use ferrogpt_core::Param;
use ferrogpt_cuda::CudaError;
use ferrogpt_model::params::BlockParams;

use super::acts::{Acts, AttnBufs, Batch, LayerActs, PART_FLOATS};
use super::forward::{block_site, Pass};
use super::launch::{self, LnStats};
use super::{gpt2, GpuModel};
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

    /// LM head: dlnf (N, C) = dlogits · wte, dwte += dlogitsᵀ · lnf; then the final
    /// LayerNorm: dres (written) from dlnf, `resid` being its input.
    fn head_backward(&self, a: &Acts, resid: DevPtr<X>, ps: Pass) -> Result<(), CudaError> {
        let (d, l, n) = (&self.dev, &self.layout, ps.n);
        let (c, vp) = (self.config.n_embd, self.config.padded_vocab_size);
        let wte = Mat::x(self.w(l.wte));
        d.gemm(Mat::x(a.dln), Mat::x(a.logits), wte, n, c, vp, 0.0)?;
        let dwte = Mat::f32(self.g(l.wte));
        d.gemm(dwte, Mat::x(a.logits).t(), Mat::x(a.lnf), vp, c, n, 1.0)?;
        let (mean, rstd) = (a.lnf_mean, a.lnf_rstd);
        self.layernorm_backward(
            a.dres,
            a.dln,
            resid,
            l.ln_f_w,
            gpt2(l.ln_f_b),
            mean,
            rstd,
            n,
            false,
        )
    }

    /// MLP: res3 = res2 + drop(fcproj(gelu(fc(ln2(res2))))); dres += its gradient.
    fn mlp_backward(
        &self,
        a: &Acts,
        blk: &BlockParams,
        la: &LayerActs,
        ps: Pass,
        site: u64,
    ) -> Result<(), CudaError> {
        let (n, c) = (ps.n, self.config.n_embd);
        let dproj = self.residual_dropout_backward(a, ps, site + 2)?;
        let (w, b) = (blk.fc_proj_w, blk.fc_proj_b);
        self.linear_backward(a.d4c, dproj, la.fch_gelu, w, b, n, 4 * c, c)?;
        launch::gelu_backward(&self.dev, a.d4c, la.fch, a.d4c, 4 * n * c)?;
        self.linear_backward(a.dln, a.d4c, la.ln2, blk.fc_w, blk.fc_b, n, c, 4 * c)?;
        let (w, b, mean, rstd) = (blk.ln_2_w, gpt2(blk.ln_2_b), la.ln2_mean, la.ln2_rstd);
        self.layernorm_backward(a.dres, a.dln, la.res2, w, b, mean, rstd, n, true)
    }

    /// Attention: res2 = resid + drop(proj(attn(qkv(ln1(resid))))); dres += its gradient.
    fn attn_backward(
        &self,
        a: &Acts,
        blk: &BlockParams,
        la: &LayerActs,
        resid: DevPtr<X>,
        ps: Pass,
        site: u64,
    ) -> Result<(), CudaError> {
        let (n, c) = (ps.n, self.config.n_embd);
        let dproj = self.residual_dropout_backward(a, ps, site + 1)?;
        let (w, b) = (blk.attn_proj_w, blk.attn_proj_b);
        self.linear_backward(a.dln, dproj, la.atty, w, b, n, c, c)?;
        self.attention_backward(&a.attn(la), ps, ps.seed(site))?;
        self.linear_backward(a.dln, a.dqkv, la.ln1, blk.attn_w, blk.attn_b, n, c, 3 * c)?;
        let (w, b, mean, rstd) = (blk.ln_1_w, gpt2(blk.ln_1_b), la.ln1_mean, la.ln1_rstd);
        self.layernorm_backward(a.dres, a.dln, resid, w, b, mean, rstd, n, true)
    }

    /// Embeddings: x0 = drop(wte[tok] + wpe[t]); dwte, dwpe += from dres.
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
        launch::encoder_backward_wpe(d, self.g(gpt2(l.wpe)), a.dres, n / t, t, c, p, seed)
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
    /// db += Σ_n dout (column sums without atomics).
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
        let wt = Mat::x(self.w(w)).t();
        d.gemm(Mat::x(dinp), Mat::x(dout), wt, n, ic, oc, 0.0)?;
        let dw = Mat::f32(self.g(w));
        d.gemm(dw, Mat::x(inp).t(), Mat::x(dout), ic, oc, n, 1.0)?;
        if let Some(bp) = bias {
            self.col_sums(self.g(bp), None, dout, n, oc)?;
        }
        Ok(())
    }

    /// LayerNorm backward: dinp = (accumulate ? dinp + : ) LN'(dout); dw, db += .
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dinp: DevPtr<X>,
        dout: DevPtr<X>,
        inp: DevPtr<X>,
        w: Param,
        b: Param,
        mean: DevPtr<f32>,
        rstd: DevPtr<f32>,
        n: usize,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let c = self.config.n_embd;
        let wx = self.w(w);
        launch::layernorm_backward(&self.dev, dinp, dout, inp, wx, mean, rstd, n, c, accumulate)?;
        let ln = LnStats { inp, mean, rstd };
        self.col_sums(self.g(b), Some((self.g(w), ln)), dout, n, c)
    }

    /// db (C) += Σ_n dout[n, :]; with `ln`, also dw (C) += Σ_n dout·xhat, xhat from the
    /// LayerNorm's input and statistics.
    fn col_sums(
        &self,
        db: DevPtr<f32>,
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
        launch::reduce_partials(d, db, a.part, parts, c)?;
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
