//! One typed launch per kernel of `kernels/*.cu`: the arguments in the kernel's order, each
//! device view checked to cover what the kernel touches (shapes in the docs, N = B·T rows),
//! and the launch shape the kernel is written for. These are the only callers of the raw
//! [`Dev::launch`]; the kernels' math is in each `.cu` file's header.
//!
//! The three kernels that index memory by token id (`encoder_forward`,
//! `encoder_backward_wte`, `softmax_ce`) are `unsafe`: their callers vouch for the ids,
//! which `Acts::upload_batch` checks against the vocabulary.

// The wrappers mirror the kernels' signatures, which are long.
#![allow(clippy::too_many_arguments)]

use ferrogpt_cuda::CudaError;

use crate::raw::{Arg, Dev, DevPtr, X};

/// Query/key rows per block of the fused attention (FA_ROWS in attention.cu).
pub(super) const FA_ROWS: usize = 64;

/// (grid, block) of a 2-D row kernel (FOR_ROWS in common.cuh): threads across are 16-byte
/// vector columns (up to 128), threads down are rows (about 256 threads a block); the grid
/// covers the rows, up to 65535 blocks down (then the kernel strides).
fn rows_grid(dev: &Dev, rows: usize, cols: usize) -> ((usize, usize), (usize, usize)) {
    let vecs = cols / (16 / dev.dtype.size());
    let bx = vecs.next_multiple_of(32).min(128);
    let by = (256 / bx).max(1);
    ((vecs.div_ceil(bx), rows.div_ceil(by).min(65_535)), (bx, by))
}

// --- encoder.cu -------------------------------------------------------------------------

/// out (N, C) = drop(wte[tok] + wpe[n % T]) (without `wpe`: drop(wte[tok])), dropout `p` from
/// `seed`.
///
/// # Safety
/// Every id in `tok` (N) is a row of `wte`.
pub(super) unsafe fn encoder_forward(
    dev: &Dev,
    out: DevPtr<X>,
    tok: DevPtr<i32>,
    wte: DevPtr<X>,
    wpe: Option<DevPtr<X>>,
    n: usize,
    t: usize,
    c: usize,
    p: f32,
    seed: u64,
) -> Result<(), CudaError> {
    let args = [
        out.arg(n * c),
        tok.arg(n),
        Arg::P(wte.addr()),
        wpe.map_or(Arg::P(0), |w| w.arg(t * c)),
        Arg::I(n),
        Arg::I(t),
        Arg::I(c),
        Arg::F(p),
        Arg::U(seed),
    ];
    // SAFETY: the views cover the shapes (checked; a null wpe is not read); the ids are the
    // caller's promise.
    unsafe { dev.launch_n("encoder_forward", n * c, &args) }
}

/// dwte (V, C) += the rows of dout (N, C) summed per token (with the forward's dropout
/// masks): one block per distinct token of `utok` (u), its positions `order[starts[i]..
/// starts[i + 1]]`; N and u are the views' lengths.
///
/// # Safety
/// `order` (N), `utok` (u) and `starts` (u + 1) are a grouping of the batch's positions by
/// token (`Acts::upload_batch`): positions below N, tokens rows of `dwte`.
pub(super) unsafe fn encoder_backward_wte(
    dev: &Dev,
    dwte: DevPtr<f32>,
    dout: DevPtr<X>,
    order: DevPtr<i32>,
    starts: DevPtr<i32>,
    utok: DevPtr<i32>,
    c: usize,
    p: f32,
    seed: u64,
) -> Result<(), CudaError> {
    let (n, u) = (order.len(), utok.len());
    let args = [
        Arg::P(dwte.addr()),
        dout.arg(n * c),
        order.arg(n),
        starts.arg(u + 1),
        utok.arg(u),
        Arg::I(c),
        Arg::F(p),
        Arg::U(seed),
    ];
    // SAFETY: the grouping is the caller's promise; the views cover it (checked).
    unsafe { dev.launch("encoder_backward_wte", (u, c.div_ceil(256)), 256, &args) }
}

/// dwpe (T, C) += Σ_b drop'(dout (B, T, C)).
pub(super) fn encoder_backward_wpe(
    dev: &Dev,
    dwpe: DevPtr<f32>,
    dout: DevPtr<X>,
    b: usize,
    t: usize,
    c: usize,
    p: f32,
    seed: u64,
) -> Result<(), CudaError> {
    let args = [
        dwpe.arg(t * c),
        dout.arg(b * t * c),
        Arg::I(b),
        Arg::I(t),
        Arg::I(c),
        Arg::F(p),
        Arg::U(seed),
    ];
    // SAFETY: the signature of encoder.cu; the views cover the shapes (checked).
    unsafe { dev.launch_n("encoder_backward_wpe", t * c, &args) }
}

// --- layernorm.cu -----------------------------------------------------------------------

/// out (N, C) = LayerNorm(inp (N, C)) · w (C) + b (C); mean, rstd (N) saved. One warp per row.
pub(super) fn layernorm_forward(
    dev: &Dev,
    out: DevPtr<X>,
    mean: DevPtr<f32>,
    rstd: DevPtr<f32>,
    inp: DevPtr<X>,
    w: DevPtr<X>,
    b: DevPtr<X>,
    n: usize,
    c: usize,
) -> Result<(), CudaError> {
    let args = [
        out.arg(n * c),
        mean.arg(n),
        rstd.arg(n),
        inp.arg(n * c),
        w.arg(c),
        b.arg(c),
        Arg::I(n),
        Arg::I(c),
    ];
    // SAFETY: the signature of layernorm.cu; the views cover the shapes (checked).
    unsafe { dev.launch("layernorm_forward", (n.div_ceil(8), 1), 256, &args) }
}

/// dinp (N, C) = (accumulate ? dinp + : ) LN'(dout (N, C)) from inp (N, C), w (C) and the
/// forward's mean, rstd (N). One warp per row. (dw and db: [`col_partials`].)
pub(super) fn layernorm_backward(
    dev: &Dev,
    dinp: DevPtr<X>,
    dout: DevPtr<X>,
    inp: DevPtr<X>,
    w: DevPtr<X>,
    mean: DevPtr<f32>,
    rstd: DevPtr<f32>,
    n: usize,
    c: usize,
    accumulate: bool,
) -> Result<(), CudaError> {
    let args = [
        dinp.arg(n * c),
        dout.arg(n * c),
        inp.arg(n * c),
        w.arg(c),
        mean.arg(n),
        rstd.arg(n),
        Arg::I(n),
        Arg::I(c),
        Arg::I(accumulate as usize),
    ];
    // SAFETY: the signature of layernorm.cu; the views cover the shapes (checked).
    unsafe { dev.launch("layernorm_backward", (n.div_ceil(8), 1), 256, &args) }
}

/// out (N, C) = inp (N, C) · rstd · w (C), rstd = 1/sqrt(mean(inp²) + eps) saved (N). One warp
/// per row.
pub(super) fn rmsnorm_forward(
    dev: &Dev,
    out: DevPtr<X>,
    rstd: DevPtr<f32>,
    inp: DevPtr<X>,
    w: DevPtr<X>,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<(), CudaError> {
    let args = [
        out.arg(n * c),
        rstd.arg(n),
        inp.arg(n * c),
        w.arg(c),
        Arg::I(n),
        Arg::I(c),
        Arg::F(eps),
    ];
    // SAFETY: the signature of layernorm.cu; the views cover the shapes (checked).
    unsafe { dev.launch("rmsnorm_forward", (n.div_ceil(8), 1), 256, &args) }
}

/// dinp (N, C) = (accumulate ? dinp + : ) RMSNorm'(dout (N, C)) from inp (N, C), w (C) and the
/// forward's rstd (N). One warp per row. (dw: [`col_partials`] without a mean.)
pub(super) fn rmsnorm_backward(
    dev: &Dev,
    dinp: DevPtr<X>,
    dout: DevPtr<X>,
    inp: DevPtr<X>,
    w: DevPtr<X>,
    rstd: DevPtr<f32>,
    n: usize,
    c: usize,
    accumulate: bool,
) -> Result<(), CudaError> {
    let args = [
        dinp.arg(n * c),
        dout.arg(n * c),
        inp.arg(n * c),
        w.arg(c),
        rstd.arg(n),
        Arg::I(n),
        Arg::I(c),
        Arg::I(accumulate as usize),
    ];
    // SAFETY: the signature of layernorm.cu; the views cover the shapes (checked).
    unsafe { dev.launch("rmsnorm_backward", (n.div_ceil(8), 1), 256, &args) }
}

/// The statistics a norm's dw needs: its input (N, C) and the forward's rstd (N), with the
/// mean (N) for a LayerNorm (None: RMSNorm, xhat = x·rstd).
#[derive(Clone, Copy)]
pub(super) struct LnStats {
    pub inp: DevPtr<X>,
    pub mean: Option<DevPtr<f32>>,
    pub rstd: DevPtr<f32>,
}

/// Column partial sums of dout (N, C) over `parts` = ⌈N / rows_per⌉ row ranges: part
/// (parts, C) = Σ dout, and with `ln` part[parts·C..] (parts, C) = Σ dout·xhat. `threads` a
/// block, each on one 16-byte vector column.
pub(super) fn col_partials(
    dev: &Dev,
    part: DevPtr<f32>,
    dout: DevPtr<X>,
    ln: Option<LnStats>,
    n: usize,
    c: usize,
    rows_per: usize,
    parts: usize,
    threads: usize,
) -> Result<(), CudaError> {
    let vec = 16 / dev.dtype.size();
    let sums = if ln.is_some() { 2 } else { 1 };
    let (inp, mean, rstd) = match ln {
        Some(s) => (
            s.inp.arg(n * c),
            s.mean.map_or(Arg::P(0), |m| m.arg(n)),
            s.rstd.arg(n),
        ),
        None => (Arg::P(0), Arg::P(0), Arg::P(0)),
    };
    let args = [
        part.arg(sums * parts * c),
        dout.arg(n * c),
        inp,
        mean,
        rstd,
        Arg::I(n),
        Arg::I(c),
        Arg::I(rows_per),
    ];
    let grid = (c.div_ceil(vec * threads), parts);
    // SAFETY: the signature of layernorm.cu (null inp: no dw; null mean: none); the views cover
    // the shapes (checked).
    unsafe { dev.launch("col_partials", grid, threads, &args) }
}

/// dst (C) += Σ_p part (parts, C), in order (deterministic). One warp per column.
pub(super) fn reduce_partials(
    dev: &Dev,
    dst: DevPtr<f32>,
    part: DevPtr<f32>,
    parts: usize,
    c: usize,
) -> Result<(), CudaError> {
    let args = [dst.arg(c), part.arg(parts * c), Arg::I(parts), Arg::I(c)];
    // SAFETY: the signature of layernorm.cu; the views cover the shapes (checked).
    unsafe { dev.launch("reduce_partials", (c.div_ceil(8), 1), 256, &args) }
}

// --- elementwise.cu ---------------------------------------------------------------------

/// out (N, OC) += bias (OC).
pub(super) fn add_bias(
    dev: &Dev,
    out: DevPtr<X>,
    bias: DevPtr<X>,
    n: usize,
    oc: usize,
) -> Result<(), CudaError> {
    let (grid, block) = rows_grid(dev, n, oc);
    let args = [out.arg(n * oc), bias.arg(oc), Arg::I(n), Arg::I(oc)];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch2("add_bias", grid, block, &args) }
}

/// pre (N, OC) += bias (OC); post (N, OC) = gelu(pre).
pub(super) fn bias_gelu_forward(
    dev: &Dev,
    pre: DevPtr<X>,
    post: DevPtr<X>,
    bias: DevPtr<X>,
    n: usize,
    oc: usize,
) -> Result<(), CudaError> {
    let (grid, block) = rows_grid(dev, n, oc);
    let args = [
        pre.arg(n * oc),
        post.arg(n * oc),
        bias.arg(oc),
        Arg::I(n),
        Arg::I(oc),
    ];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch2("bias_gelu_forward", grid, block, &args) }
}

/// post (len) = gelu(pre): the activation recomputed in the backward pass.
pub(super) fn gelu_forward(
    dev: &Dev,
    post: DevPtr<X>,
    pre: DevPtr<X>,
    len: usize,
) -> Result<(), CudaError> {
    let args = [post.arg(len), pre.arg(len), Arg::U(len as u64)];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch_n("gelu_forward", len, &args) }
}

/// dinp (len) = gelu'(inp) · dout (dinp may be dout).
pub(super) fn gelu_backward(
    dev: &Dev,
    dinp: DevPtr<X>,
    inp: DevPtr<X>,
    dout: DevPtr<X>,
    len: usize,
) -> Result<(), CudaError> {
    let args = [
        dinp.arg(len),
        inp.arg(len),
        dout.arg(len),
        Arg::U(len as u64),
    ];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch_n("gelu_backward", len, &args) }
}

/// out (N, F) = silu(gate) · up from inp (N, 2F) rows [gate | up]. F a multiple of 8.
pub(super) fn swiglu_forward(
    dev: &Dev,
    out: DevPtr<X>,
    inp: DevPtr<X>,
    n: usize,
    f: usize,
) -> Result<(), CudaError> {
    let (grid, block) = rows_grid(dev, n, f);
    let args = [out.arg(n * f), inp.arg(2 * n * f), Arg::I(n), Arg::I(f)];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch2("swiglu_forward", grid, block, &args) }
}

/// dinp (N, 2F) = SwiGLU'(dout (N, F)) at inp (N, 2F), written.
pub(super) fn swiglu_backward(
    dev: &Dev,
    dinp: DevPtr<X>,
    dout: DevPtr<X>,
    inp: DevPtr<X>,
    n: usize,
    f: usize,
) -> Result<(), CudaError> {
    let (grid, block) = rows_grid(dev, n, f);
    let args = [
        dinp.arg(2 * n * f),
        dout.arg(n * f),
        inp.arg(2 * n * f),
        Arg::I(n),
        Arg::I(f),
    ];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch2("swiglu_backward", grid, block, &args) }
}

/// out (N, C) = a + drop(b + bias (C)) (no bias: a + drop(b)): a projection joins the residual
/// stream.
pub(super) fn residual_forward(
    dev: &Dev,
    out: DevPtr<X>,
    a: DevPtr<X>,
    b: DevPtr<X>,
    bias: Option<DevPtr<X>>,
    n: usize,
    c: usize,
    p: f32,
    seed: u64,
) -> Result<(), CudaError> {
    let (grid, block) = rows_grid(dev, n, c);
    let args = [
        out.arg(n * c),
        a.arg(n * c),
        b.arg(n * c),
        bias.map_or(Arg::P(0), |x| x.arg(c)),
        Arg::I(n),
        Arg::I(c),
        Arg::F(p),
        Arg::U(seed),
    ];
    // SAFETY: the signature of elementwise.cu (a null bias is not read); the views cover the
    // shapes (checked).
    unsafe { dev.launch2("residual_forward", grid, block, &args) }
}

/// dst (len) = src · the dropout mask of (p, seed).
pub(super) fn dropout_backward(
    dev: &Dev,
    dst: DevPtr<X>,
    src: DevPtr<X>,
    len: usize,
    p: f32,
    seed: u64,
) -> Result<(), CudaError> {
    let args = [
        dst.arg(len),
        src.arg(len),
        Arg::U(len as u64),
        Arg::F(p),
        Arg::U(seed),
    ];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch_n("dropout_backward", len, &args) }
}

/// dst (len) = floatX(src (len)).
pub(super) fn to_floatx(
    dev: &Dev,
    dst: DevPtr<X>,
    src: DevPtr<f32>,
    len: usize,
) -> Result<(), CudaError> {
    let args = [dst.arg(len), src.arg(len), Arg::U(len as u64)];
    // SAFETY: the signature of elementwise.cu; the views cover the shapes (checked).
    unsafe { dev.launch_n("to_floatx", len, &args) }
}

// --- rope.cu ----------------------------------------------------------------------------

/// The rotary tables and the head shape [`rope`] works with: cos and sin (maxT, HS/2) f32,
/// `nh` query and `kv` key/value heads of `hs`.
#[derive(Clone, Copy)]
pub(super) struct Rope {
    pub cos: DevPtr<f32>,
    pub sin: DevPtr<f32>,
    pub nh: usize,
    pub kv: usize,
    pub hs: usize,
}

/// Turns the q and k heads of qkv (N, (NH + 2·KV)·HS), in place, by their rows' positions
/// (row n at n % T, or, decoding (T = 1), at the position pos_at[2n] holds on the device, the
/// second int of each of `step`'s pairs): forward, or
/// with `inverse` the inverse rotation (the backward, on dqkv).
pub(super) fn rope(
    dev: &Dev,
    qkv: DevPtr<X>,
    r: Rope,
    n: usize,
    t: usize,
    inverse: bool,
    pos_at: Option<DevPtr<i32>>,
) -> Result<(), CudaError> {
    let (heads, w) = (r.nh + r.kv, (r.nh + 2 * r.kv) * r.hs);
    let h2 = r.hs / 2;
    assert!(
        h2.is_multiple_of(4) && t * h2 <= r.cos.len(),
        "rope: head size {} or T {t} beyond the tables",
        r.hs
    );
    let args = [
        qkv.arg(n * w),
        r.cos.arg(t * h2),
        r.sin.arg(t * h2),
        Arg::I(n),
        Arg::I(t),
        Arg::I(heads),
        Arg::I(r.hs),
        Arg::I(w),
        Arg::F(if inverse { -1.0 } else { 1.0 }),
        pos_at.map_or(Arg::U(0), |p| p.arg(2 * n - 1)),
    ];
    // SAFETY: the signature of rope.cu; the views cover the shapes (checked; a position read
    // from the device is below the tables' rows: decode.rs checks it before uploading it).
    unsafe { dev.launch_n("rope", n * heads * h2 / 4, &args) }
}

// --- softmax_ce.cu ----------------------------------------------------------------------

/// losses (N) = cross-entropy of softmax(logits (N, Vp)[:, :V]) at targets (N); with
/// `dscale` ≠ 0 the logits are overwritten by dscale · their gradient. One block per row.
///
/// # Safety
/// Every target is below V.
pub(super) unsafe fn softmax_ce(
    dev: &Dev,
    logits: DevPtr<X>,
    losses: DevPtr<f32>,
    targets: DevPtr<i32>,
    n: usize,
    v: usize,
    vp: usize,
    dscale: f32,
) -> Result<(), CudaError> {
    assert!(v <= vp, "vocabulary {v} beyond its padded size {vp}");
    let args = [
        logits.arg(n * vp),
        losses.arg(n),
        targets.arg(n),
        Arg::I(n),
        Arg::I(v),
        Arg::I(vp),
        Arg::F(dscale),
    ];
    // SAFETY: the views cover the shapes (checked); the targets are the caller's promise.
    unsafe { dev.launch("softmax_ce", (n, 1), 1024, &args) }
}

// --- optimizer.cu -----------------------------------------------------------------------

/// The scalars of one AdamW step (see optimizer.cu).
pub(super) struct AdamW {
    pub b1: f32,
    pub b2: f32,
    /// lr / (1 - β1^t)
    pub step_size: f32,
    /// √(1 - β2^t)
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// lr · weight decay
    pub wd: f32,
    pub gscale: f32,
}

/// One AdamW step over n parameters: p (f32), m, v updated from g · gscale; weight decay
/// where bit i of `decay` (⌈n/32⌉ u32) is set; the floatX copy `px` written when given.
pub(super) fn adamw(
    dev: &Dev,
    p: DevPtr<f32>,
    px: Option<DevPtr<X>>,
    g: DevPtr<f32>,
    m: DevPtr<f32>,
    v: DevPtr<f32>,
    decay: DevPtr<u32>,
    n: usize,
    h: &AdamW,
) -> Result<(), CudaError> {
    let args = [
        p.arg(n),
        px.map_or(p.arg(n), |x| x.arg(n)),
        g.arg(n),
        m.arg(n),
        v.arg(n),
        decay.arg(n.div_ceil(32)),
        Arg::U(n as u64),
        Arg::F(h.b1),
        Arg::F(h.b2),
        Arg::F(h.step_size),
        Arg::F(h.bc2_sqrt),
        Arg::F(h.eps),
        Arg::F(h.wd),
        Arg::F(h.gscale),
        Arg::I(px.is_some() as usize),
    ];
    // SAFETY: the signature of optimizer.cu (px unused without write_x); the views cover the
    // shapes (checked).
    unsafe { dev.launch_n("adamw", n, &args) }
}

/// One SGD step (momentum `mu` in `buf`) over n parameters, as [`adamw`].
pub(super) fn sgd(
    dev: &Dev,
    p: DevPtr<f32>,
    px: Option<DevPtr<X>>,
    g: DevPtr<f32>,
    buf: DevPtr<f32>,
    decay: DevPtr<u32>,
    n: usize,
    lr: f32,
    mu: f32,
    wd: f32,
    gscale: f32,
) -> Result<(), CudaError> {
    let args = [
        p.arg(n),
        px.map_or(p.arg(n), |x| x.arg(n)),
        g.arg(n),
        buf.arg(n),
        decay.arg(n.div_ceil(32)),
        Arg::U(n as u64),
        Arg::F(lr),
        Arg::F(mu),
        Arg::F(wd),
        Arg::F(gscale),
        Arg::I(px.is_some() as usize),
    ];
    // SAFETY: the signature of optimizer.cu (px unused without write_x); the views cover the
    // shapes (checked).
    unsafe { dev.launch_n("sgd", n, &args) }
}

/// part (blocks) = Σ g² over each block's grid-stride share of g (n).
pub(super) fn sumsq_partial(
    dev: &Dev,
    part: DevPtr<f32>,
    g: DevPtr<f32>,
    n: usize,
    blocks: usize,
) -> Result<(), CudaError> {
    let args = [part.arg(blocks), g.arg(n), Arg::U(n as u64)];
    // SAFETY: the signature of optimizer.cu; the views cover the shapes (checked).
    unsafe { dev.launch("sumsq_partial", (blocks, 1), 256, &args) }
}

/// out (1) = Σ part (parts), in a fixed order.
pub(super) fn sum_final(
    dev: &Dev,
    out: DevPtr<f32>,
    part: DevPtr<f32>,
    parts: usize,
) -> Result<(), CudaError> {
    let args = [out.arg(1), part.arg(parts), Arg::I(parts)];
    // SAFETY: the signature of optimizer.cu; the views cover the shapes (checked).
    unsafe { dev.launch("sum_final", (1, 1), 1024, &args) }
}

// --- attention.cu, attention_tc.cu ------------------------------------------------------

/// Which fused attention runs: the tensor-core kernels (`tc`: bf16, head size 64) or the
/// CUDA-core ones instantiated per head size; `nh` query heads of `hs` sharing `kv` key/value
/// heads. qkv rows are W = (NH + 2·KV)·HS wide, out rows C = NH·HS.
#[derive(Clone, Copy)]
pub(super) struct Flash {
    pub tc: bool,
    pub nh: usize,
    pub kv: usize,
    pub hs: usize,
}

impl Flash {
    /// The kernel's name and block size: `tc` on the tensor cores, else `base_HS`.
    fn kernel(self, base: &str, tc: &str) -> (String, usize) {
        let hs = self.hs;
        if self.tc {
            (tc.to_string(), 128)
        } else {
            (format!("{base}_{hs}"), FA_ROWS * (hs / hs.min(16)))
        }
    }

    /// One block per FA_ROWS query (or key) rows of one (row of the batch, head of `heads`).
    fn grid(self, n: usize, t: usize, heads: usize) -> (usize, usize) {
        (t.div_ceil(FA_ROWS), (n / t) * heads)
    }

    /// Width of a qkv row.
    fn w(self) -> usize {
        (self.nh + 2 * self.kv) * self.hs
    }

    /// out (N, C) and lse (B, NH, T) from qkv (N, W), causal, dropout `p` from `seed` on
    /// the probabilities.
    pub fn forward(
        self,
        dev: &Dev,
        out: DevPtr<X>,
        lse: DevPtr<f32>,
        qkv: DevPtr<X>,
        n: usize,
        t: usize,
        p: f32,
        seed: u64,
    ) -> Result<(), CudaError> {
        let (c, nh) = (self.nh * self.hs, self.nh);
        let tc = if self.kv == nh {
            "flash_tc_forward"
        } else {
            "flash_tc_forward_gqa"
        };
        let (name, threads) = self.kernel("flash_forward", tc);
        let args = [
            out.arg(n * c),
            lse.arg(n * nh),
            qkv.arg(n * self.w()),
            Arg::I(t),
            Arg::I(nh),
            Arg::I(self.kv),
            Arg::F(p),
            Arg::U(seed),
        ];
        // SAFETY: the signature of attention(_tc).cu; the views cover the shapes (checked).
        unsafe { dev.launch(&name, self.grid(n, t, nh), threads, &args) }
    }

    /// delta (B, NH, T) = rowsum(dout ∘ out) per head, for the tensor-core backward.
    pub fn tc_delta(
        self,
        dev: &Dev,
        delta: DevPtr<f32>,
        dout: DevPtr<X>,
        out: DevPtr<X>,
        n: usize,
        t: usize,
    ) -> Result<(), CudaError> {
        let (c, nh) = (self.nh * self.hs, self.nh);
        let args = [
            delta.arg(n * nh),
            dout.arg(n * c),
            out.arg(n * c),
            Arg::I(n),
            Arg::I(t),
            Arg::I(nh),
        ];
        // SAFETY: the signature of attention_tc.cu; the views cover the shapes (checked).
        unsafe { dev.launch_n("flash_tc_delta", n * nh, &args) }
    }

    /// The dq part of dqkv (N, W), written, from dout, qkv, lse and the forward's dropout
    /// masks. The CUDA-core kernel computes delta itself from dout and `out` (and stores
    /// it); the tensor-core one reads it ([`Flash::tc_delta`]) and takes no `out`.
    pub fn backward_dq(
        self,
        dev: &Dev,
        dqkv: DevPtr<X>,
        delta: DevPtr<f32>,
        dout: DevPtr<X>,
        out: DevPtr<X>,
        qkv: DevPtr<X>,
        lse: DevPtr<f32>,
        n: usize,
        t: usize,
        p: f32,
        seed: u64,
    ) -> Result<(), CudaError> {
        let (c, nh) = (self.nh * self.hs, self.nh);
        let (name, threads) = self.kernel("flash_backward_dq", "flash_tc_backward_dq");
        let mut args = vec![dqkv.arg(n * self.w()), delta.arg(n * nh), dout.arg(n * c)];
        if !self.tc {
            args.push(out.arg(n * c));
        }
        args.extend([qkv.arg(n * self.w()), lse.arg(n * nh)]);
        args.extend([
            Arg::I(t),
            Arg::I(nh),
            Arg::I(self.kv),
            Arg::F(p),
            Arg::U(seed),
        ]);
        // SAFETY: the signature of attention(_tc).cu; the views cover the shapes (checked).
        unsafe { dev.launch(&name, self.grid(n, t, nh), threads, &args) }
    }

    /// The dk and dv parts of dqkv (N, W), written, from delta, dout, qkv and lse: one block
    /// per key tile of one (row of the batch, key/value head), summing over its query heads.
    pub fn backward_dkdv(
        self,
        dev: &Dev,
        dqkv: DevPtr<X>,
        delta: DevPtr<f32>,
        dout: DevPtr<X>,
        qkv: DevPtr<X>,
        lse: DevPtr<f32>,
        n: usize,
        t: usize,
        p: f32,
        seed: u64,
    ) -> Result<(), CudaError> {
        let (c, nh) = (self.nh * self.hs, self.nh);
        let (name, threads) = self.kernel("flash_backward_dkdv", "flash_tc_backward_dkdv");
        let args = [
            dqkv.arg(n * self.w()),
            delta.arg(n * nh),
            dout.arg(n * c),
            qkv.arg(n * self.w()),
            lse.arg(n * nh),
            Arg::I(t),
            Arg::I(nh),
            Arg::I(self.kv),
            Arg::F(p),
            Arg::U(seed),
        ];
        // SAFETY: the signature of attention(_tc).cu; the views cover the shapes (checked).
        unsafe { dev.launch(&name, self.grid(n, t, self.kv), threads, &args) }
    }
}

// --- decode.cu ---------------------------------------------------------------------------

/// Longest cache `attn_decode` takes (DECODE_MAX_T in decode.cu).
pub(super) const DECODE_MAX_T: usize = 4096;

/// Rows [0, n) of qkv (n, W)'s k and v heads → rows [pos0, pos0 + n) of the caches kc, vc
/// (one sequence's (maxT, KV·HS) slab each: a prompt); with `step` (a decoding step of n
/// sequences), row b goes to slab b (of `rows` rows, the caches holding n of them) at the
/// position step[2b + 1] holds on the device, below `rows`.
#[allow(clippy::too_many_arguments)]
pub(super) fn kv_append(
    dev: &Dev,
    kc: DevPtr<X>,
    vc: DevPtr<X>,
    qkv: DevPtr<X>,
    n: usize,
    pos0: usize,
    step: Option<(DevPtr<i32>, usize)>,
    f: Flash,
) -> Result<(), CudaError> {
    let kvw = f.kv * f.hs;
    let (extent, rows) = step.map_or((pos0 + n, 0), |(_, rows)| (n * rows, rows));
    let args = [
        kc.arg(extent * kvw),
        vc.arg(extent * kvw),
        qkv.arg(n * f.w()),
        Arg::I(n),
        Arg::I(pos0),
        Arg::I(f.nh),
        Arg::I(f.kv),
        Arg::I(f.hs),
        step.map_or(Arg::U(0), |(p, _)| p.arg(2 * n)),
        Arg::I(rows),
    ];
    // SAFETY: the signature of decode.cu; the views cover the shapes (checked; a position read
    // from the device is below `rows`: decode.rs checks it before uploading it).
    unsafe { dev.launch_n("kv_append", n * kvw, &args) }
}

/// out (B, C): row b = wte[token] (+ wpe[pos]), token and pos the pair at step[2b] on the
/// device (checked against the vocabulary and the position table before they were uploaded).
pub(super) fn embed_step(
    dev: &Dev,
    out: DevPtr<X>,
    step: DevPtr<i32>,
    wte: DevPtr<X>,
    wpe: Option<DevPtr<X>>,
    b: usize,
    c: usize,
) -> Result<(), CudaError> {
    let args = [
        out.arg(b * c),
        step.arg(2 * b),
        wte.arg(wte.len()),
        wpe.map_or(Arg::U(0), |p| p.arg(p.len())),
        Arg::I(b),
        Arg::I(c),
    ];
    // SAFETY: the signature of decode.cu; the token rows and position rows are inside wte and
    // wpe (the caller checked the values it uploaded).
    unsafe { dev.launch_n("embed_step", b * c, &args) }
}

/// out (B, NH·HS): row b = attention of qkv's row b's query over sequence b's cache rows
/// 0 ..= step[2b + 1] (the position `step` holds on the device, below `rows`, the rows of a
/// sequence's slab; the caches hold B slabs).
#[allow(clippy::too_many_arguments)]
pub(super) fn attn_decode(
    dev: &Dev,
    out: DevPtr<X>,
    qkv: DevPtr<X>,
    kc: DevPtr<X>,
    vc: DevPtr<X>,
    step: DevPtr<i32>,
    b: usize,
    rows: usize,
    f: Flash,
) -> Result<(), CudaError> {
    assert!(
        (1..=DECODE_MAX_T).contains(&rows) && f.hs <= 128 && b >= 1,
        "attn_decode: {rows} cached positions, head size {}, {b} sequences",
        f.hs
    );
    let kvw = f.kv * f.hs;
    let args = [
        out.arg(b * f.nh * f.hs),
        qkv.arg(b * f.w()),
        kc.arg(b * rows * kvw),
        vc.arg(b * rows * kvw),
        step.arg(2 * b),
        Arg::I(f.nh),
        Arg::I(f.kv),
        Arg::I(f.hs),
        Arg::I(rows),
    ];
    // SAFETY: the signature of decode.cu; the views cover the shapes (checked; the positions
    // read from the device are below `rows`: decode.rs checks them before uploading them).
    unsafe { dev.launch("attn_decode", (f.nh, b), 256, &args) }
}
