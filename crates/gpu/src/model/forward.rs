//! The forward pass: embeddings, then per block an attention sublayer and an MLP sublayer
//! (each pre-norm, joining the residual stream through a dropout), the final norm, the LM
//! head, and the fused softmax/cross-entropy. One method per layer kind; `backward.rs` has
//! each one's backward under the same name, called in reverse. The family picks the norm
//! (LayerNorm / RMSNorm), the MLP's activation (GELU / SwiGLU) and the weights' layout.
//!
//! Shapes: N = B·T rows, C channels, W the packed qkv's width, F the MLP's, Vp padded
//! vocabulary; activations in floatX.

use ferrogpt_core::Param;
use ferrogpt_cuda::CudaError;
use ferrogpt_model::config::Family;
use ferrogpt_model::params::BlockParams;

use super::acts::{Acts, AttnBufs, Batch, LayerActs, NormStats};
use super::launch;
use super::GpuModel;
use crate::lt::Epilogue;
use crate::raw::{DevPtr, Mat, X};

/// One pass: N = B·T rows of T positions, dropout `p` with masks from `seed`.
#[derive(Clone, Copy)]
pub(super) struct Pass {
    pub n: usize,
    pub t: usize,
    pub p: f32,
    pub seed: u64,
}

impl Pass {
    /// The mask seed of dropout site `site`: 0 the embeddings; block l's attention
    /// probabilities `block_site(l)`, its two residual branches the next two.
    pub fn seed(self, site: u64) -> u64 {
        let mut z = self.seed ^ site.wrapping_mul(0xD1B5_4A32_D192_ED03);
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
}

/// The first dropout site of block `li` (see [`Pass::seed`]).
pub(super) fn block_site(li: usize) -> u64 {
    1 + 3 * li as u64
}

impl GpuModel {
    /// The forward pass on B·T tokens (`t` per row), with dropout `p` from `seed`. With
    /// `targets`, the per-position losses; with `dscale` ≠ 0 also dlogits (scaled) in place
    /// of the logits. The sum of the losses goes to slot `slot` of the result buffer, and is
    /// read back (a synchronisation) and returned when `read`. `backward` uploads what the
    /// embedding backward needs; the second value is the batch's number of distinct tokens.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &mut self,
        tokens: &[u32],
        targets: Option<&[u32]>,
        t: usize,
        p: f32,
        seed: u64,
        dscale: f32,
        slot: usize,
        read: bool,
        backward: bool,
    ) -> Result<(Option<f64>, usize), CudaError> {
        let n = tokens.len();
        if n == 0 || !n.is_multiple_of(t) || t > self.config.block_size {
            return Err(CudaError::Input(format!(
                "{n} tokens in rows of {t} (block size {})",
                self.config.block_size
            )));
        }
        let rows = (n / t) * self.config.n_head;
        if rows > 65_535 {
            return Err(CudaError::Input(format!(
                "batch {} × {} heads = {rows} attention rows; the GPU attention takes at most 65535 (use a smaller batch)",
                n / t,
                self.config.n_head
            )));
        }
        self.ensure(n)?;
        let a = self.acts.as_ref().expect("ensured");
        let v = self.config.vocab_size;
        let u = a.upload_batch(&self.dev, v, tokens, targets, backward)?;
        let batch = a.batch(n, u);
        let ps = Pass { n, t, p, seed };
        self.embed_forward(a, &batch, ps)?;
        let mut resid = a.x0;
        for (li, (blk, la)) in self.layout.blocks.iter().zip(&a.layers).enumerate() {
            self.attn_forward(a, blk, la, resid, ps, block_site(li))?;
            self.mlp_forward(a, blk, la, ps, block_site(li))?;
            resid = la.res3;
        }
        self.head_forward(a, resid, ps)?;
        if targets.is_none() {
            return Ok((None, u));
        }
        let out = self.out.ptr().slice(slot, 1);
        self.loss_forward(a, &batch, out, dscale, ps)?;
        if !read {
            return Ok((None, u));
        }
        let mut sum = [0f32];
        self.dev.dtoh(&mut sum, out)?;
        Ok((Some(sum[0] as f64), u))
    }

    /// x0 (N, C) = drop(wte[tokens] + wpe[t]) (rotary positions: drop(wte[tokens])).
    fn embed_forward(&self, a: &Acts, batch: &Batch, ps: Pass) -> Result<(), CudaError> {
        let l = &self.layout;
        // SAFETY: upload_batch checked every id below the vocabulary, within wte's rows.
        unsafe {
            launch::encoder_forward(
                &self.dev,
                a.x0,
                batch.tokens,
                self.w(l.wte),
                l.wpe.map(|p| self.w(p)),
                ps.n,
                ps.t,
                self.config.n_embd,
                ps.p,
                ps.seed(0),
            )
        }
    }

    /// res2 = resid + drop(proj(attn(rope(qkv(norm1(resid)))))), dropout sites `site`
    /// (attention) and `site + 1` (residual). qkv (N, W); rope with rotary positions only.
    fn attn_forward(
        &self,
        a: &Acts,
        blk: &BlockParams,
        la: &LayerActs,
        resid: DevPtr<X>,
        ps: Pass,
        site: u64,
    ) -> Result<(), CudaError> {
        let (d, n, c) = (&self.dev, ps.n, self.config.n_embd);
        let w = self.config.qkv_width();
        self.norm_forward(la.ln1, la.ln1_s, resid, blk.ln_1_w, blk.ln_1_b, n)?;
        match (&self.lt, blk.attn_b) {
            // qkv = ln1 · W + b, the bias in the GEMM's epilogue
            (Some(lt), Some(b)) => lt.matmul(
                d,
                la.qkv,
                la.ln1,
                self.w(blk.attn_w),
                n,
                w,
                c,
                Epilogue::Bias { bias: self.w(b) },
            )?,
            _ => self.linear(la.qkv, la.ln1, blk.attn_w, blk.attn_b, n, c, w)?,
        }
        if let Some(r) = self.rope() {
            launch::rope(d, la.qkv, r, n, ps.t, false, None)?;
        }
        self.attention_forward(&a.attn(la), ps, ps.seed(site))?;
        self.linear(a.proj, la.atty, blk.attn_proj_w, None, n, c, c)?;
        // res2 = resid + drop(proj + bias)
        let bias = blk.attn_proj_b.map(|b| self.w(b));
        let seed = ps.seed(site + 1);
        launch::residual_forward(d, la.res2, resid, a.proj, bias, n, c, ps.p, seed)
    }

    /// res3 = res2 + drop(fcproj(act(fc(norm2(res2))))), dropout site `site + 2`; act is
    /// GELU on (N, F) (GPT-2) or SwiGLU on (N, 2F) → (N, F) (Llama).
    pub(super) fn mlp_forward(
        &self,
        a: &Acts,
        blk: &BlockParams,
        la: &LayerActs,
        ps: Pass,
        site: u64,
    ) -> Result<(), CudaError> {
        let (d, n, c, f) = (&self.dev, ps.n, self.config.n_embd, self.config.ffn());
        self.norm_forward(la.ln2, la.ln2_s, la.res2, blk.ln_2_w, blk.ln_2_b, n)?;
        match (self.config.family, &self.lt, blk.fc_b) {
            // fch = ln2 · W + b (kept for the backward), fch_act = gelu(fch): one GEMM
            (Family::Gpt2, Some(lt), Some(b)) => lt.matmul(
                d,
                la.fch_act,
                la.ln2,
                self.w(blk.fc_w),
                n,
                f,
                c,
                Epilogue::GeluAuxBias {
                    bias: self.w(b),
                    aux: la.fch,
                },
            )?,
            (Family::Gpt2, _, b) => {
                self.linear(la.fch, la.ln2, blk.fc_w, None, n, c, f)?;
                // fch += bias; fch_act = gelu(fch)
                let bias = self.w(b.expect("GPT-2 layouts have MLP biases"));
                launch::bias_gelu_forward(d, la.fch, la.fch_act, bias, n, f)?;
            }
            (Family::Llama, _, _) => {
                // fch (N, 2F) = [gate | up]; fch_act = silu(gate) · up
                self.linear(la.fch, la.ln2, blk.fc_w, blk.fc_b, n, c, 2 * f)?;
                launch::swiglu_forward(d, la.fch_act, la.fch, n, f)?;
            }
        }
        self.linear(a.proj, la.fch_act, blk.fc_proj_w, None, n, f, c)?;
        // res3 = res2 + drop(proj + bias)
        let bias = blk.fc_proj_b.map(|b| self.w(b));
        let seed = ps.seed(site + 2);
        launch::residual_forward(d, la.res3, la.res2, a.proj, bias, n, c, ps.p, seed)
    }

    /// lnf = normf(resid); logits (N, Vp) = lnf (N, C) · headᵀ (head = wte when tied).
    pub(super) fn head_forward(
        &self,
        a: &Acts,
        resid: DevPtr<X>,
        ps: Pass,
    ) -> Result<(), CudaError> {
        let (d, l, n) = (&self.dev, &self.layout, ps.n);
        let (c, vp) = (self.config.n_embd, self.config.padded_vocab_size);
        self.norm_forward(a.lnf, a.lnf_s, resid, l.ln_f_w, l.ln_f_b, n)?;
        let head = Mat::x(self.w(l.head())).t();
        d.gemm(Mat::x(a.logits), Mat::x(a.lnf), head, n, vp, c, 0.0)
    }

    /// losses (N) from the logits and the targets (dlogits · dscale in place of the logits
    /// when dscale ≠ 0); out (1) = Σ losses.
    fn loss_forward(
        &self,
        a: &Acts,
        batch: &Batch,
        out: DevPtr<f32>,
        dscale: f32,
        ps: Pass,
    ) -> Result<(), CudaError> {
        let (d, n) = (&self.dev, ps.n);
        let (v, vp) = (self.config.vocab_size, self.config.padded_vocab_size);
        // SAFETY: upload_batch checked every target below the vocabulary.
        unsafe { launch::softmax_ce(d, a.logits, a.losses, batch.targets, n, v, vp, dscale)? };
        launch::sum_final(d, out, a.losses, n)
    }

    /// The family's norm of inp (N, C) into out: LayerNorm with a bias (mean and rstd saved in
    /// `s`), RMSNorm without (rstd saved).
    pub(super) fn norm_forward(
        &self,
        out: DevPtr<X>,
        s: NormStats,
        inp: DevPtr<X>,
        w: Param,
        b: Option<Param>,
        n: usize,
    ) -> Result<(), CudaError> {
        let (d, c) = (&self.dev, self.config.n_embd);
        match (b, s.mean) {
            (Some(b), Some(mean)) => {
                let (w, b) = (self.w(w), self.w(b));
                launch::layernorm_forward(d, out, mean, s.rstd, inp, w, b, n, c)
            }
            _ => {
                let eps = self.config.norm_eps as f32;
                launch::rmsnorm_forward(d, out, s.rstd, inp, self.w(w), n, c, eps)
            }
        }
    }

    /// out (N, OC) = inp (N, IC) · W + bias, W stored (IC, OC) (GPT-2) or (OC, IC) (Llama,
    /// read transposed).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear(
        &self,
        out: DevPtr<X>,
        inp: DevPtr<X>,
        w: Param,
        bias: Option<Param>,
        n: usize,
        ic: usize,
        oc: usize,
    ) -> Result<(), CudaError> {
        let wm = self.wmat(w);
        self.dev
            .gemm(Mat::x(out), Mat::x(inp), wm, n, oc, ic, 0.0)?;
        if let Some(bp) = bias {
            launch::add_bias(&self.dev, out, self.w(bp), n, oc)?;
        }
        Ok(())
    }

    /// A linear weight as the (IC, OC) right factor of `linear`'s product.
    pub(super) fn wmat(&self, w: Param) -> Mat {
        let m = Mat::x(self.w(w));
        if self.layout.weights_out_in {
            m.t()
        } else {
            m
        }
    }

    /// The fused attention's forward on `ps.n` rows: out and lse from qkv, dropout from
    /// `seed`.
    pub(super) fn attention_forward(
        &self,
        ab: &AttnBufs,
        ps: Pass,
        seed: u64,
    ) -> Result<(), CudaError> {
        let (n, t, p) = (ps.n, ps.t, ps.p);
        self.flash()
            .forward(&self.dev, ab.out, ab.lse, ab.qkv, n, t, p, seed)
    }
}
