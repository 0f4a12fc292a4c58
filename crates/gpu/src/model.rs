//! GPT-2 on the GPU: the same model as `ferrogpt_model::Gpt`, forward and backward written out
//! layer by layer (llm.c style) over raw device buffers, with the parameter layout of
//! `ParamLayout` so weights, gradients and moments are each one flat allocation.
//!
//! Precision ([`Dtype`]): `F32` runs everything in f32. `Bf16` stores activations, activation
//! gradients and a working copy of the weights in bf16 and multiplies in bf16 on the tensor
//! cores (f32 accumulation); master weights, weight gradients, AdamW moments, LayerNorm
//! statistics, the softmax/cross-entropy and every reduction stay f32. The optimizer writes
//! the bf16 copy in the same pass as the master weights.
//!
//! What crosses the bus per micro-batch: the token ids (with their order by token, for the
//! deterministic embedding backward) in, one f32 loss out. Gradient norms: one f32 out.

use cudarc::driver::CudaSlice;
use ferrogpt_core::Param;
use ferrogpt_cuda::{CudaError, Gpu};
use ferrogpt_model::{GptConfig, ParamLayout};

use crate::lt::{Epilogue, Lt};
use crate::raw::{Arg, Dev, Mat, HEAD_SIZES};
use crate::Dtype;

/// Blocks of `sumsq_partial` (fixed, so the norm is deterministic).
const NORM_BLOCKS: usize = 1024;
/// Losses (or norms) the result buffer holds before the host reads them back.
const OUT_SLOTS: usize = 64;
/// Query/key rows per block of the fused attention (FA_ROWS in attention.cu).
const FA_ROWS: usize = 64;

/// Which optimizer the state is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptKind {
    AdamW,
    Sgd,
}

/// Hyper-parameters of one optimizer update.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
}

/// A device buffer and its address.
struct Buf {
    _mem: CudaSlice<u8>,
    ptr: u64,
}

impl Buf {
    fn new(dev: &Dev, bytes: usize) -> Result<Buf, CudaError> {
        let (mem, ptr) = dev.alloc(bytes)?;
        Ok(Buf { _mem: mem, ptr })
    }
}

/// Byte offsets handed out in one allocation, 256-byte aligned.
struct Arena(usize);

impl Arena {
    fn take(&mut self, elems: usize, size: usize) -> usize {
        let at = self.0;
        self.0 += (elems * size).div_ceil(256) * 256;
        at
    }
}

/// Activations of one block, byte offsets (shapes with N = B·T).
#[derive(Clone, Copy)]
struct LayerActs {
    ln1: usize,      // (N, C) X
    ln1_mean: usize, // (N) f32
    ln1_rstd: usize, // (N) f32
    qkv: usize,      // (N, 3C) X
    atty: usize,     // (N, C) X
    lse: usize,      // (B, NH, T) f32
    res2: usize,     // (N, C) X: residual after attention
    ln2: usize,      // (N, C) X
    ln2_mean: usize, // (N) f32
    ln2_rstd: usize, // (N) f32
    fch: usize,      // (N, 4C) X: before GELU
    fch_gelu: usize, // (N, 4C) X
    res3: usize,     // (N, C) X: residual after the MLP (the next block's input)
}

/// Every activation and scratch buffer for up to `cap` rows (N = B·T ≤ cap).
struct Acts {
    buf: Buf,
    cap: usize,
    layers: Vec<LayerActs>,
    x0: usize,       // (N, C) X: embeddings
    lnf: usize,      // (N, C) X
    lnf_mean: usize, // (N) f32
    lnf_rstd: usize, // (N) f32
    logits: usize,   // (N, Vp) X; overwritten by dlogits in training
    losses: usize,   // (N) f32
    proj: usize,     // (N, C) X: output of a projection before the residual add
    // backward scratch
    dres: usize,  // (N, C) X: gradient of the residual stream
    dtmp: usize,  // (N, C) X
    d4c: usize,   // (N, 4C) X
    dqkv: usize,  // (N, 3C) X
    dln: usize,   // (N, C) X
    delta: usize, // (B, NH, T) f32: attention's D
    part: usize,  // (PART_FLOATS) f32: column partial sums
    ints: usize,  // 5N + 1 i32: tokens, targets, order, distinct tokens, bucket starts
}

/// Room for the column partial sums of `col_sums` (db and dw: 2 × parts × C ≤ this).
const PART_FLOATS: usize = 1 << 20;

impl Acts {
    fn new(dev: &Dev, cfg: &GptConfig, cap: usize) -> Result<Acts, CudaError> {
        let (n, c, x) = (cap, cfg.n_embd, dev.dtype.size());
        let nh = cfg.n_head;
        let mut a = Arena(0);
        let layers = (0..cfg.n_layer)
            .map(|_| LayerActs {
                ln1: a.take(n * c, x),
                ln1_mean: a.take(n, 4),
                ln1_rstd: a.take(n, 4),
                qkv: a.take(n * 3 * c, x),
                atty: a.take(n * c, x),
                lse: a.take(n * nh, 4),
                res2: a.take(n * c, x),
                ln2: a.take(n * c, x),
                ln2_mean: a.take(n, 4),
                ln2_rstd: a.take(n, 4),
                fch: a.take(n * 4 * c, x),
                fch_gelu: a.take(n * 4 * c, x),
                res3: a.take(n * c, x),
            })
            .collect();
        let mut acts = Acts {
            buf: Buf {
                _mem: dev.alloc(0)?.0,
                ptr: 0,
            },
            cap,
            layers,
            x0: a.take(n * c, x),
            lnf: a.take(n * c, x),
            lnf_mean: a.take(n, 4),
            lnf_rstd: a.take(n, 4),
            logits: a.take(n * cfg.padded_vocab_size, x),
            losses: a.take(n, 4),
            proj: a.take(n * c, x),
            dres: a.take(n * c, x),
            dtmp: a.take(n * c, x),
            d4c: a.take(n * 4 * c, x),
            dqkv: a.take(n * 3 * c, x),
            dln: a.take(n * c, x),
            delta: a.take(n * nh, 4),
            part: a.take(PART_FLOATS, 4),
            ints: a.take(5 * n + 1, 4),
        };
        acts.buf = Buf::new(dev, a.0)?;
        Ok(acts)
    }
    fn p(&self, off: usize) -> u64 {
        self.buf.ptr + off as u64
    }
    /// Block `la`'s attention buffers; the gradient side in the shared backward scratch
    /// (dout in `dln`, where the output projection's backward leaves it).
    fn attn(&self, la: &LayerActs) -> AttnBufs {
        AttnBufs {
            qkv: self.p(la.qkv),
            out: self.p(la.atty),
            lse: self.p(la.lse),
            delta: self.p(self.delta),
            dout: self.p(self.dln),
            dqkv: self.p(self.dqkv),
        }
    }
}

/// Device addresses of one attention call: qkv (N, 3C), out (N, C), lse and delta (B, NH, T)
/// f32, dout (N, C) and dqkv (N, 3C).
struct AttnBufs {
    qkv: u64,
    out: u64,
    lse: u64,
    delta: u64,
    dout: u64,
    dqkv: u64,
}

/// Gradients and optimizer state (training only).
struct TrainState {
    grads: Buf, // (P) f32
    m: Buf,     // (P) f32
    v: Buf,     // (P) f32, AdamW only
    decay: Buf, // (P/32) u32 bits: weight decay applies
    scal: Buf,  // (NORM_BLOCKS + 8) f32 scratch for reductions
    kind: OptKind,
    t: u64,
}

/// GPT-2 on one GPU. See the module doc for precision and data movement.
pub struct GpuModel {
    dev: Dev,
    pub config: GptConfig,
    pub layout: ParamLayout,
    params: Buf,           // (P) f32 master weights
    params_x: Option<Buf>, // (P) bf16 working copy (None in f32: the master weights are read)
    train: Option<TrainState>,
    acts: Option<Acts>,
    out: Buf, // (OUT_SLOTS) f32: results read back by the host
    tc_attention: bool,
    /// cuBLASLt for the forward linears with a fused epilogue (bf16; None: plain cuBLAS and
    /// our bias kernels, as in fp32, or with FERROGPT_CUBLASLT=0).
    lt: Option<Lt>,
}

/// The optimizer state of a run, to start or resume from (host copies).
pub struct OptState {
    pub kind: OptKind,
    pub m: Vec<f32>,
    /// Empty for SGD.
    pub v: Vec<f32>,
    pub t: u64,
    /// Weight decay applies to parameter i (same layout as the parameters).
    pub decay: Vec<bool>,
}

fn seed_of(seed: u64, site: u64) -> u64 {
    let mut z = seed ^ site.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^ (z >> 33)
}

impl GpuModel {
    /// Uploads `params` (flat, `ParamLayout` order) to `gpu`; with `opt`, also the optimizer
    /// state and a gradient buffer (training). Errors: a head size the fused attention is not
    /// built for, a wrong buffer length, any CUDA failure.
    pub fn new(
        gpu: Gpu,
        dtype: Dtype,
        config: GptConfig,
        params: &[f32],
        opt: Option<OptState>,
    ) -> Result<GpuModel, CudaError> {
        let hs = config.head_size();
        if !HEAD_SIZES.contains(&hs) {
            return Err(CudaError::Input(format!(
                "head size {hs} (n_embd / n_head): the GPU attention is built for head sizes {HEAD_SIZES:?}"
            )));
        }
        let layout = ParamLayout::new(&config);
        let n = layout.total;
        if params.len() != n {
            return Err(CudaError::Input(format!(
                "{} parameter values for a model of {n}",
                params.len()
            )));
        }
        let cc = gpu.compute_capability();
        if dtype == Dtype::Bf16 && cc < (8, 0) {
            return Err(CudaError::Unsupported {
                level: "--dtype bf16 (bf16 tensor cores)",
                need: (8, 0),
                have: cc,
            });
        }
        let dev = Dev::new(gpu, dtype)?;
        let p = Buf::new(&dev, n * 4)?;
        dev.htod(p.ptr, params)?;
        let params_x = if dtype == Dtype::F32 {
            None
        } else {
            let px = Buf::new(&dev, n * dtype.size())?;
            dev.launch_n(
                "to_floatx",
                n,
                &[Arg::P(px.ptr), Arg::P(p.ptr), Arg::U(n as u64)],
            )?;
            Some(px)
        };
        let train = match opt {
            None => None,
            Some(o) => {
                if o.m.len() != n
                    || (o.kind == OptKind::AdamW && o.v.len() != n)
                    || o.decay.len() != n
                {
                    return Err(CudaError::Input(format!(
                        "optimizer state of {}/{} values for {n} parameters",
                        o.m.len(),
                        o.v.len()
                    )));
                }
                let grads = Buf::new(&dev, n * 4)?;
                let m = Buf::new(&dev, n * 4)?;
                dev.htod(m.ptr, &o.m)?;
                let v = Buf::new(&dev, if o.kind == OptKind::AdamW { n * 4 } else { 0 })?;
                if o.kind == OptKind::AdamW {
                    dev.htod(v.ptr, &o.v)?;
                }
                let mut bits = vec![0u32; n.div_ceil(32)];
                for (i, d) in o.decay.iter().enumerate() {
                    if *d {
                        bits[i / 32] |= 1 << (i % 32);
                    }
                }
                let decay = Buf::new(&dev, bits.len() * 4)?;
                dev.htod(decay.ptr, &bits)?;
                let scal = Buf::new(&dev, (NORM_BLOCKS + 8) * 4)?;
                Some(TrainState {
                    grads,
                    m,
                    v,
                    decay,
                    scal,
                    kind: o.kind,
                    t: o.t,
                })
            }
        };
        let out = Buf::new(&dev, OUT_SLOTS * 4)?;
        let tc_attention = dtype == Dtype::Bf16
            && config.head_size() == 64
            && std::env::var("FERROGPT_ATTENTION").map_or(true, |v| v != "cuda-core");
        // cuBLASLt's algorithms are picked for 256-byte aligned operands: every weight starts
        // at a multiple of C elements, so C must be a multiple of 128 (bf16).
        let lt = if dtype == Dtype::Bf16
            && config.n_embd.is_multiple_of(128)
            && std::env::var("FERROGPT_CUBLASLT").map_or(true, |v| v != "0")
        {
            Lt::new(&dev)?
        } else {
            None
        };
        Ok(GpuModel {
            dev,
            config,
            layout,
            params: p,
            params_x,
            train,
            acts: None,
            out,
            tc_attention,
            lt,
        })
    }

    /// "NVIDIA H100 80GB HBM3 (bf16)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.dev.gpu.name(), self.dev.dtype.name())
    }

    pub fn dtype(&self) -> Dtype {
        self.dev.dtype
    }

    /// Whether attention runs on the tensor cores: bf16 with head size 64, unless
    /// `FERROGPT_ATTENTION=cuda-core` asks for the f32 CUDA-core kernels (the tests compare both).
    pub fn tensor_core_attention(&self) -> bool {
        self.tc_attention
    }

    /// Forward linears through plain cuBLAS and our bias/GELU kernels even where cuBLASLt's
    /// fused epilogues apply (bf16).
    pub fn use_plain_cublas(&mut self) {
        self.lt = None;
    }

    /// Whether the forward linears use cuBLASLt with fused epilogues.
    pub fn fused_epilogues(&self) -> bool {
        self.lt.is_some()
    }

    /// Runs attention on the f32 CUDA-core kernels even where the tensor-core ones apply.
    pub fn use_cuda_core_attention(&mut self) {
        self.tc_attention = false;
    }

    /// The attention kernel's name and block size: `tc` on the tensor cores, else `base_HS`.
    fn attention_kernel(&self, base: &str, tc: &str) -> (String, usize) {
        let hs = self.config.head_size();
        if self.tensor_core_attention() {
            (tc.to_string(), 128)
        } else {
            (format!("{base}_{hs}"), FA_ROWS * (hs / hs.min(16)))
        }
    }

    /// Address of parameter `p` in the working copy (floatX).
    fn w(&self, p: Param) -> u64 {
        let base = self.params_x.as_ref().unwrap_or(&self.params).ptr;
        base + (p.offset * self.dev.dtype.size()) as u64
    }

    /// Address of the f32 gradient of parameter `p`.
    fn g(&self, p: Param) -> u64 {
        let t = self.train.as_ref().expect("training state");
        t.grads.ptr + (p.offset * 4) as u64
    }

    fn ensure(&mut self, n: usize) -> Result<(), CudaError> {
        if self.acts.as_ref().is_none_or(|a| a.cap < n) {
            self.acts = None; // free the old buffers first
            self.acts = Some(Acts::new(&self.dev, &self.config, n)?);
        }
        Ok(())
    }

    /// Uploads tokens and targets (B·T ids, row-major (B, T)) and, when `backward` (for the
    /// embedding backward), the positions sorted by token. Returns the number of distinct ids.
    fn upload_batch(
        &self,
        a: &Acts,
        tokens: &[u32],
        targets: Option<&[u32]>,
        backward: bool,
    ) -> Result<usize, CudaError> {
        let n = tokens.len();
        let v = self.config.vocab_size;
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
        // Positions grouped by token, in order within a token: a counting sort (O(N + V), on
        // the critical path of every step, where a comparison sort of 16k ids took ~0.3 ms).
        if !backward {
            self.dev.htod(a.p(a.ints), &ints)?;
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
        self.dev.htod(a.p(a.ints), &ints)?;
        Ok(u)
    }

    /// The forward pass on B·T tokens (`t` per row), with dropout `p` from `seed`. With
    /// `targets`, the per-position losses; with `dscale` ≠ 0 also dlogits (scaled) in place
    /// of the logits. The sum of the losses goes to slot `slot` of the result buffer, and is
    /// read back (a synchronisation) and returned when `read`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
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
        let d = &self.dev;
        let cfg = &self.config;
        let l = &self.layout;
        let c = cfg.n_embd;
        let (vp, v) = (cfg.padded_vocab_size, cfg.vocab_size);
        let nc = n * c;
        let u = self.upload_batch(a, tokens, targets, backward)?;
        let tok = a.p(a.ints);
        let _ = u;
        let x = |off: usize| Mat {
            ptr: a.p(off),
            f32: false,
            t: false,
        };
        let wm = |prm: Param, tr: bool| Mat {
            ptr: self.w(prm),
            f32: false,
            t: tr,
        };
        d.launch_n(
            "encoder_forward",
            nc,
            &[
                Arg::P(a.p(a.x0)),
                Arg::P(tok),
                Arg::P(self.w(l.wte)),
                Arg::P(self.w(l.wpe)),
                Arg::I(n),
                Arg::I(t),
                Arg::I(c),
                Arg::F(p),
                Arg::U(seed_of(seed, 0)),
            ],
        )?;
        let mut resid = a.x0;
        for (li, (blk, la)) in l.blocks.iter().zip(&a.layers).enumerate() {
            let site = 1 + 3 * li as u64;
            self.layernorm_forward(
                a.p(la.ln1),
                a.p(la.ln1_mean),
                a.p(la.ln1_rstd),
                a.p(resid),
                blk.ln_1_w,
                blk.ln_1_b,
                n,
            )?;
            match &self.lt {
                // qkv = ln1 · W + b, the bias in the GEMM's epilogue
                Some(lt) => lt.matmul(
                    d,
                    a.p(la.qkv),
                    a.p(la.ln1),
                    self.w(blk.attn_w),
                    n,
                    3 * c,
                    c,
                    Epilogue::Bias {
                        bias: self.w(blk.attn_b),
                    },
                )?,
                None => self.linear(
                    x(la.qkv),
                    x(la.ln1),
                    blk.attn_w,
                    Some(blk.attn_b),
                    n,
                    c,
                    3 * c,
                )?,
            }
            self.attention_forward(&a.attn(la), n, t, p, seed_of(seed, site))?;
            self.linear(x(a.proj), x(la.atty), blk.attn_proj_w, None, n, c, c)?;
            // res2 = resid + drop(proj + bias)
            self.residual_forward(
                a.p(la.res2),
                a.p(resid),
                a.p(a.proj),
                blk.attn_proj_b,
                n,
                p,
                seed_of(seed, site + 1),
            )?;
            self.layernorm_forward(
                a.p(la.ln2),
                a.p(la.ln2_mean),
                a.p(la.ln2_rstd),
                a.p(la.res2),
                blk.ln_2_w,
                blk.ln_2_b,
                n,
            )?;
            match &self.lt {
                // fch = ln2 · W + b (kept for the backward), fch_gelu = gelu(fch): one GEMM
                Some(lt) => lt.matmul(
                    d,
                    a.p(la.fch_gelu),
                    a.p(la.ln2),
                    self.w(blk.fc_w),
                    n,
                    4 * c,
                    c,
                    Epilogue::GeluAuxBias {
                        bias: self.w(blk.fc_b),
                        aux: a.p(la.fch),
                    },
                )?,
                None => {
                    self.linear(x(la.fch), x(la.ln2), blk.fc_w, None, n, c, 4 * c)?;
                    // fch += bias; fch_gelu = gelu(fch)
                    d.launch2(
                        "bias_gelu_forward",
                        self.rows_grid(n, 4 * c).0,
                        self.rows_grid(n, 4 * c).1,
                        &[
                            Arg::P(a.p(la.fch)),
                            Arg::P(a.p(la.fch_gelu)),
                            Arg::P(self.w(blk.fc_b)),
                            Arg::I(n),
                            Arg::I(4 * c),
                        ],
                    )?;
                }
            }
            self.linear(x(a.proj), x(la.fch_gelu), blk.fc_proj_w, None, n, 4 * c, c)?;
            // res3 = res2 + drop(proj + bias)
            self.residual_forward(
                a.p(la.res3),
                a.p(la.res2),
                a.p(a.proj),
                blk.fc_proj_b,
                n,
                p,
                seed_of(seed, site + 2),
            )?;
            resid = la.res3;
        }
        self.layernorm_forward(
            a.p(a.lnf),
            a.p(a.lnf_mean),
            a.p(a.lnf_rstd),
            a.p(resid),
            l.ln_f_w,
            l.ln_f_b,
            n,
        )?;
        // logits (N, Vp) = lnf (N, C) · wteᵀ
        d.gemm(x(a.logits), x(a.lnf), wm(l.wte, true), n, vp, c, 0.0)?;
        if targets.is_none() {
            return Ok((None, u));
        }
        d.launch(
            "softmax_ce",
            (n, 1),
            1024,
            &[
                Arg::P(a.p(a.logits)),
                Arg::P(a.p(a.losses)),
                Arg::P(tok + 4 * n as u64),
                Arg::I(n),
                Arg::I(v),
                Arg::I(vp),
                Arg::F(dscale),
            ],
        )?;
        d.launch(
            "sum_final",
            (1, 1),
            1024,
            &[
                Arg::P(self.out.ptr + 4 * slot as u64),
                Arg::P(a.p(a.losses)),
                Arg::I(n),
            ],
        )?;
        if !read {
            return Ok((None, u));
        }
        let mut sum = [0f32];
        d.dtoh(&mut sum, self.out.ptr + 4 * slot as u64)?;
        Ok((Some(sum[0] as f64), u))
    }

    /// out (N, OC) = inp (N, IC) · W (IC, OC) + bias
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        out: Mat,
        inp: Mat,
        w: Param,
        bias: Option<Param>,
        n: usize,
        ic: usize,
        oc: usize,
    ) -> Result<(), CudaError> {
        let wm = Mat {
            ptr: self.w(w),
            f32: false,
            t: false,
        };
        self.dev.gemm(out, inp, wm, n, oc, ic, 0.0)?;
        if let Some(bp) = bias {
            self.dev.launch2(
                "add_bias",
                self.rows_grid(n, oc).0,
                self.rows_grid(n, oc).1,
                &[Arg::P(out.ptr), Arg::P(self.w(bp)), Arg::I(n), Arg::I(oc)],
            )?;
        }
        Ok(())
    }

    /// (grid, block) of a 2-D row kernel (FOR_ROWS in common.cuh): threads across are 16-byte
    /// vector columns (up to 128), threads down are rows (about 256 threads a block); the grid
    /// covers the rows, up to 65535 blocks down (then the kernel strides).
    fn rows_grid(&self, rows: usize, cols: usize) -> ((usize, usize), (usize, usize)) {
        let vecs = cols / (16 / self.dev.dtype.size());
        let bx = vecs.next_multiple_of(32).min(128);
        let by = (256 / bx).max(1);
        ((vecs.div_ceil(bx), rows.div_ceil(by).min(65_535)), (bx, by))
    }

    /// Backward of `linear`: dinp (N, IC) = dout · Wᵀ (written), dW += inpᵀ · dout,
    /// db += Σ_n dout (column sums without atomics).
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        dinp: Mat,
        dout: Mat,
        inp: Mat,
        w: Param,
        bias: Option<Param>,
        n: usize,
        ic: usize,
        oc: usize,
    ) -> Result<(), CudaError> {
        let d = &self.dev;
        d.gemm(
            dinp,
            dout,
            Mat {
                ptr: self.w(w),
                f32: false,
                t: true,
            },
            n,
            ic,
            oc,
            0.0,
        )?;
        let dw = Mat {
            ptr: self.g(w),
            f32: true,
            t: false,
        };
        d.gemm(dw, Mat { t: true, ..inp }, dout, ic, oc, n, 1.0)?;
        if let Some(bp) = bias {
            self.col_sums(self.g(bp), None, dout.ptr, 0, 0, 0, n, oc)?;
        }
        Ok(())
    }

    /// db (C) += Σ_n dout[n, :]; with `ln`, also dw (C) += Σ_n dout·xhat, xhat from inp, mean, rstd.
    #[allow(clippy::too_many_arguments)]
    fn col_sums(
        &self,
        db: u64,
        dw: Option<u64>,
        dout: u64,
        inp: u64,
        mean: u64,
        rstd: u64,
        n: usize,
        c: usize,
    ) -> Result<(), CudaError> {
        let a = self.acts.as_ref().expect("activations");
        // Enough partial sums to fill the GPU (about 64k threads of one vector column each),
        // within the scratch buffer.
        // Enough partial sums to fill the GPU (about 64k threads of one vector column each;
        // measured on an H100: 64 rows a partial was 1.7x slower for C = 384), within the
        // scratch buffer.
        let vec = 16 / self.dev.dtype.size();
        let want = (65_536 * vec / c).clamp(1, (PART_FLOATS / (2 * c)).min(65_535));
        let rows_per = n.div_ceil(want).max(1);
        let parts = n.div_ceil(rows_per);
        let threads = (c / vec).next_multiple_of(32).min(128);
        let part = a.p(a.part);
        let inp = if dw.is_some() { inp } else { 0 };
        let d = &self.dev;
        d.launch(
            "col_partials",
            (c.div_ceil(vec * threads), parts),
            threads,
            &[
                Arg::P(part),
                Arg::P(dout),
                Arg::P(inp),
                Arg::P(mean),
                Arg::P(rstd),
                Arg::I(n),
                Arg::I(c),
                Arg::I(rows_per),
            ],
        )?;
        let red = |dst: u64, src: u64| {
            d.launch(
                "reduce_partials",
                (c.div_ceil(8), 1),
                256,
                &[Arg::P(dst), Arg::P(src), Arg::I(parts), Arg::I(c)],
            )
        };
        red(db, part)?;
        if let Some(dw) = dw {
            red(dw, part + (parts * c * 4) as u64)?;
        }
        Ok(())
    }

    /// LayerNorm backward: dinp = (accumulate ? dinp + : ) LN'(dout); dw, db += .
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dinp: u64,
        dout: u64,
        inp: u64,
        w: Param,
        b: Param,
        mean: u64,
        rstd: u64,
        n: usize,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let c = self.config.n_embd;
        self.dev.launch(
            "layernorm_backward",
            (n.div_ceil(8), 1),
            256,
            &[
                Arg::P(dinp),
                Arg::P(dout),
                Arg::P(inp),
                Arg::P(self.w(w)),
                Arg::P(mean),
                Arg::P(rstd),
                Arg::I(n),
                Arg::I(c),
                Arg::I(accumulate as usize),
            ],
        )?;
        self.col_sums(self.g(b), Some(self.g(w)), dout, inp, mean, rstd, n, c)
    }

    /// Forward and backward of one micro-batch: adds `scale` × ∂(mean loss)/∂params to the
    /// gradients. Dropout with the model's rate, from `seed`. Returns the mean loss.
    pub fn accumulate(
        &mut self,
        tokens: &[u32],
        targets: &[u32],
        t: usize,
        scale: f32,
        seed: u64,
    ) -> Result<f64, CudaError> {
        if self.train.is_none() {
            return Err(CudaError::Input(
                "this model was opened for inference only".into(),
            ));
        }
        let n = tokens.len();
        if targets.len() != n {
            return Err(CudaError::Input(format!(
                "{} targets for {n} tokens",
                targets.len()
            )));
        }
        let p = self.config.dropout as f32;
        let (sum, u) = self.forward(
            tokens,
            Some(targets),
            t,
            p,
            seed,
            scale / n as f32,
            0,
            true,
            scale != 0.0,
        )?;
        if scale != 0.0 {
            self.backward(n, t, p, seed, u)?;
        }
        Ok(sum.expect("targets given") / n as f64)
    }

    fn backward(&self, n: usize, t: usize, p: f32, seed: u64, u: usize) -> Result<(), CudaError> {
        let a = self.acts.as_ref().expect("forward ran");
        let d = &self.dev;
        let cfg = &self.config;
        let l = &self.layout;
        let (b, c) = (n / t, cfg.n_embd);
        let vp = cfg.padded_vocab_size;
        let nc = n * c;
        let x = |off: usize| Mat {
            ptr: a.p(off),
            f32: false,
            t: false,
        };
        // LM head: dlnf (N, C) = dlogits · wte; dwte += dlogitsᵀ · lnf.
        d.gemm(
            x(a.dln),
            x(a.logits),
            Mat {
                ptr: self.w(l.wte),
                f32: false,
                t: false,
            },
            n,
            c,
            vp,
            0.0,
        )?;
        d.gemm(
            Mat {
                ptr: self.g(l.wte),
                f32: true,
                t: false,
            },
            Mat {
                t: true,
                ..x(a.logits)
            },
            x(a.lnf),
            vp,
            c,
            n,
            1.0,
        )?;
        let last = a.layers.last().map_or(a.x0, |la| la.res3);
        self.layernorm_backward(
            a.p(a.dres),
            a.p(a.dln),
            a.p(last),
            l.ln_f_w,
            l.ln_f_b,
            a.p(a.lnf_mean),
            a.p(a.lnf_rstd),
            n,
            false,
        )?;
        // dres holds ∂loss/∂(residual stream) from here on.
        let drop = |dst: usize, site: u64| -> Result<usize, CudaError> {
            if p == 0.0 {
                return Ok(a.dres);
            }
            d.launch_n(
                "dropout_backward",
                nc,
                &[
                    Arg::P(a.p(dst)),
                    Arg::P(a.p(a.dres)),
                    Arg::U(nc as u64),
                    Arg::F(p),
                    Arg::U(seed_of(seed, site)),
                ],
            )?;
            Ok(dst)
        };
        for (li, (blk, la)) in l.blocks.iter().zip(&a.layers).enumerate().rev() {
            let site = 1 + 3 * li as u64;
            let resid = if li == 0 { a.x0 } else { a.layers[li - 1].res3 };
            // MLP: res3 = res2 + drop(fcproj(gelu(fc(ln2(res2)))))
            let dproj = drop(a.dtmp, site + 2)?;
            self.linear_backward(
                x(a.d4c),
                x(dproj),
                x(la.fch_gelu),
                blk.fc_proj_w,
                Some(blk.fc_proj_b),
                n,
                4 * c,
                c,
            )?;
            d.launch_n(
                "gelu_backward",
                4 * nc,
                &[
                    Arg::P(a.p(a.d4c)),
                    Arg::P(a.p(la.fch)),
                    Arg::P(a.p(a.d4c)),
                    Arg::U(4 * nc as u64),
                ],
            )?;
            self.linear_backward(
                x(a.dln),
                x(a.d4c),
                x(la.ln2),
                blk.fc_w,
                Some(blk.fc_b),
                n,
                c,
                4 * c,
            )?;
            self.layernorm_backward(
                a.p(a.dres),
                a.p(a.dln),
                a.p(la.res2),
                blk.ln_2_w,
                blk.ln_2_b,
                a.p(la.ln2_mean),
                a.p(la.ln2_rstd),
                n,
                true,
            )?;
            // Attention: res2 = resid + drop(proj(attn(qkv(ln1(resid)))))
            let dproj = drop(a.dtmp, site + 1)?;
            self.linear_backward(
                x(a.dln),
                x(dproj),
                x(la.atty),
                blk.attn_proj_w,
                Some(blk.attn_proj_b),
                n,
                c,
                c,
            )?;
            self.attention_backward(&a.attn(la), n, t, p, seed_of(seed, site))?;
            self.linear_backward(
                x(a.dln),
                x(a.dqkv),
                x(la.ln1),
                blk.attn_w,
                Some(blk.attn_b),
                n,
                c,
                3 * c,
            )?;
            self.layernorm_backward(
                a.p(a.dres),
                a.p(a.dln),
                a.p(resid),
                blk.ln_1_w,
                blk.ln_1_b,
                a.p(la.ln1_mean),
                a.p(la.ln1_rstd),
                n,
                true,
            )?;
        }
        // Embeddings: x0 = drop(wte[tok] + wpe[t]).
        let tok = a.p(a.ints);
        let order = tok + (8 * n) as u64;
        let utok = order + (4 * n) as u64;
        let starts = utok + (4 * u) as u64;
        let eseed = Arg::U(seed_of(seed, 0));
        d.launch(
            "encoder_backward_wte",
            (u, c.div_ceil(256)),
            256,
            &[
                Arg::P(self.g(l.wte)),
                Arg::P(a.p(a.dres)),
                Arg::P(order),
                Arg::P(starts),
                Arg::P(utok),
                Arg::I(c),
                Arg::F(p),
                eseed,
            ],
        )?;
        d.launch_n(
            "encoder_backward_wpe",
            t * c,
            &[
                Arg::P(self.g(l.wpe)),
                Arg::P(a.p(a.dres)),
                Arg::I(b),
                Arg::I(t),
                Arg::I(c),
                Arg::F(p),
                eseed,
            ],
        )
    }

    /// Sets the gradients to zero.
    pub fn zero_grads(&self) -> Result<(), CudaError> {
        let t = self
            .train
            .as_ref()
            .ok_or_else(|| CudaError::Input("inference only".into()))?;
        self.dev.zero(t.grads.ptr, self.layout.total * 4)
    }

    /// Sums the gradients across the ranks of `nccl`, in place, on the model's stream.
    pub fn all_reduce_grads(&self, nccl: &crate::nccl::Nccl) -> Result<(), CudaError> {
        let t = self
            .train
            .as_ref()
            .ok_or_else(|| CudaError::Input("inference only".into()))?;
        // SAFETY: the gradient buffer holds layout.total f32 on this GPU for as long as the
        // model lives; the stream orders the sum after the backward passes and before the
        // norm and the update.
        unsafe {
            nccl.all_reduce_sum(
                t.grads.ptr,
                self.layout.total,
                cudarc::nccl::sys::ncclDataType_t::ncclFloat32,
                self.dev.cu_stream(),
            )
        }
    }

    /// The GPU the model lives on.
    pub fn gpu(&self) -> &ferrogpt_cuda::Gpu {
        &self.dev.gpu
    }

    /// The global L2 norm of the gradients (deterministic two-stage sum).
    pub fn grad_norm(&self) -> Result<f64, CudaError> {
        let t = self
            .train
            .as_ref()
            .ok_or_else(|| CudaError::Input("inference only".into()))?;
        let d = &self.dev;
        d.launch(
            "sumsq_partial",
            (NORM_BLOCKS, 1),
            256,
            &[
                Arg::P(t.scal.ptr),
                Arg::P(t.grads.ptr),
                Arg::U(self.layout.total as u64),
            ],
        )?;
        d.launch(
            "sum_final",
            (1, 1),
            1024,
            &[
                Arg::P(self.out.ptr),
                Arg::P(t.scal.ptr),
                Arg::I(NORM_BLOCKS),
            ],
        )?;
        let mut s = [0f32];
        d.dtoh(&mut s, self.out.ptr)?;
        Ok((s[0] as f64).sqrt())
    }

    /// One optimizer update with the gradients multiplied by `gscale` (clipping folded in).
    pub fn update(&mut self, u: &Update, gscale: f32) -> Result<(), CudaError> {
        let px = self.params_x.as_ref().map(|b| b.ptr);
        let (pp, n) = (self.params.ptr, self.layout.total);
        let d = &self.dev;
        let t = self
            .train
            .as_mut()
            .ok_or_else(|| CudaError::Input("inference only".into()))?;
        t.t += 1;
        let write_x = Arg::I(px.is_some() as usize);
        let px = Arg::P(px.unwrap_or(pp));
        match t.kind {
            OptKind::AdamW => {
                let bc1 = 1.0 - u.beta1.powi(t.t as i32);
                let bc2 = 1.0 - u.beta2.powi(t.t as i32);
                d.launch_n(
                    "adamw",
                    n,
                    &[
                        Arg::P(pp),
                        px,
                        Arg::P(t.grads.ptr),
                        Arg::P(t.m.ptr),
                        Arg::P(t.v.ptr),
                        Arg::P(t.decay.ptr),
                        Arg::U(n as u64),
                        Arg::F(u.beta1 as f32),
                        Arg::F(u.beta2 as f32),
                        Arg::F((u.lr / bc1) as f32),
                        Arg::F(bc2.sqrt() as f32),
                        Arg::F(u.eps as f32),
                        Arg::F((u.lr * u.weight_decay) as f32),
                        Arg::F(gscale),
                        write_x,
                    ],
                )
            }
            OptKind::Sgd => d.launch_n(
                "sgd",
                n,
                &[
                    Arg::P(pp),
                    px,
                    Arg::P(t.grads.ptr),
                    Arg::P(t.m.ptr),
                    Arg::P(t.decay.ptr),
                    Arg::U(n as u64),
                    Arg::F(u.lr as f32),
                    Arg::F(u.momentum as f32),
                    Arg::F(u.weight_decay as f32),
                    Arg::F(gscale),
                    write_x,
                ],
            ),
        }
    }

    /// The loss of every position of one batch (B·T f32, from the softmax/cross-entropy
    /// kernel's per-position output), without dropout or gradients.
    pub fn token_losses(
        &mut self,
        tokens: &[u32],
        targets: &[u32],
        t: usize,
    ) -> Result<Vec<f32>, CudaError> {
        self.forward(tokens, Some(targets), t, 0.0, 0, 0.0, 0, true, false)?;
        let a = self
            .acts
            .as_ref()
            .ok_or_else(|| CudaError::Input("no activations after a forward pass".into()))?;
        let mut h = vec![0f32; tokens.len()];
        self.dev.dtoh(&mut h, a.p(a.losses))?;
        Ok(h)
    }

    /// Mean loss of one batch without dropout or gradients.
    pub fn loss(&mut self, tokens: &[u32], targets: &[u32], t: usize) -> Result<f64, CudaError> {
        let (sum, _) = self.forward(tokens, Some(targets), t, 0.0, 0, 0.0, 0, true, false)?;
        Ok(sum.expect("targets given") / tokens.len() as f64)
    }

    /// Mean loss of each (tokens, targets) batch, without dropout or gradients. The batches
    /// are queued back to back and their losses read back together (one synchronisation per
    /// `OUT_SLOTS` batches), so the GPU does not wait for the host between them.
    pub fn losses(
        &mut self,
        batches: &[(Vec<u32>, Vec<u32>)],
        t: usize,
    ) -> Result<Vec<f64>, CudaError> {
        let mut out = Vec::with_capacity(batches.len());
        for chunk in batches.chunks(OUT_SLOTS) {
            for (i, (x, y)) in chunk.iter().enumerate() {
                if y.len() != x.len() {
                    return Err(CudaError::Input(format!(
                        "{} targets for {} tokens",
                        y.len(),
                        x.len()
                    )));
                }
                self.forward(x, Some(y), t, 0.0, 0, 0.0, i, false, false)?;
            }
            let mut sums = vec![0f32; chunk.len()];
            self.dev.dtoh(&mut sums, self.out.ptr)?;
            out.extend(
                sums.iter()
                    .zip(chunk)
                    .map(|(&s, (x, _))| s as f64 / x.len() as f64),
            );
        }
        Ok(out)
    }

    /// Logits (B × V, f32) of the last position of each row of `tokens` (B·T ids).
    pub fn last_logits(&mut self, tokens: &[u32], t: usize) -> Result<Vec<f32>, CudaError> {
        self.forward(tokens, None, t, 0.0, 0, 0.0, 0, false, false)?;
        let a = self.acts.as_ref().expect("forward ran");
        let (vp, v, xs) = (
            self.config.padded_vocab_size,
            self.config.vocab_size,
            self.dev.dtype.size(),
        );
        let b = tokens.len() / t;
        let mut out = Vec::with_capacity(b * v);
        for r in 0..b {
            let row = a.p(a.logits) + (((r * t + t - 1) * vp) * xs) as u64;
            out.extend(self.download_x(row, v)?);
        }
        Ok(out)
    }

    /// Host copy of the f32 master weights.
    pub fn params(&self) -> Result<Vec<f32>, CudaError> {
        let mut h = vec![0f32; self.layout.total];
        self.dev.dtoh(&mut h, self.params.ptr)?;
        Ok(h)
    }

    /// Host copy of the gradients (for tests).
    pub fn grads(&self) -> Result<Vec<f32>, CudaError> {
        let t = self
            .train
            .as_ref()
            .ok_or_else(|| CudaError::Input("inference only".into()))?;
        let mut h = vec![0f32; self.layout.total];
        self.dev.dtoh(&mut h, t.grads.ptr)?;
        Ok(h)
    }

    /// Host copy of the optimizer state: (m, v, steps). v is empty for SGD.
    pub fn optimizer_state(&self) -> Result<(Vec<f32>, Vec<f32>, u64), CudaError> {
        let t = self
            .train
            .as_ref()
            .ok_or_else(|| CudaError::Input("inference only".into()))?;
        let n = self.layout.total;
        let mut m = vec![0f32; n];
        self.dev.dtoh(&mut m, t.m.ptr)?;
        let mut v = Vec::new();
        if t.kind == OptKind::AdamW {
            v = vec![0f32; n];
            self.dev.dtoh(&mut v, t.v.ptr)?;
        }
        Ok((m, v, t.t))
    }

    /// out (N, C) = LayerNorm(inp) · w + b; mean, rstd (N) saved. One warp per row.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: u64,
        mean: u64,
        rstd: u64,
        inp: u64,
        w: Param,
        b: Param,
        n: usize,
    ) -> Result<(), CudaError> {
        let args = [
            Arg::P(out),
            Arg::P(mean),
            Arg::P(rstd),
            Arg::P(inp),
            Arg::P(self.w(w)),
            Arg::P(self.w(b)),
            Arg::I(n),
            Arg::I(self.config.n_embd),
        ];
        self.dev
            .launch("layernorm_forward", (n.div_ceil(8), 1), 256, &args)
    }

    /// out (N, C) = a + drop(b + bias): a projection joins the residual stream.
    #[allow(clippy::too_many_arguments)]
    fn residual_forward(
        &self,
        out: u64,
        a: u64,
        b: u64,
        bias: Param,
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<(), CudaError> {
        let c = self.config.n_embd;
        let (grid, block) = self.rows_grid(n, c);
        let args = [
            Arg::P(out),
            Arg::P(a),
            Arg::P(b),
            Arg::P(self.w(bias)),
            Arg::I(n),
            Arg::I(c),
            Arg::F(p),
            Arg::U(seed),
        ];
        self.dev.launch2("residual_forward", grid, block, &args)
    }

    /// The fused attention's forward on N = B·T rows: out and lse from qkv.
    fn attention_forward(
        &self,
        ab: &AttnBufs,
        n: usize,
        t: usize,
        p: f32,
        seed: u64,
    ) -> Result<(), CudaError> {
        let nh = self.config.n_head;
        let (name, threads) = self.attention_kernel("flash_forward", "flash_tc_forward");
        let args = [
            Arg::P(ab.out),
            Arg::P(ab.lse),
            Arg::P(ab.qkv),
            Arg::I(t),
            Arg::I(nh),
            Arg::F(p),
            Arg::U(seed),
        ];
        self.dev
            .launch(&name, (t.div_ceil(FA_ROWS), (n / t) * nh), threads, &args)
    }

    /// The fused attention's backward: dqkv (written) from dout, out, qkv and lse, with the
    /// same dropout masks (`seed`) as the forward. D = rowsum(dout ∘ out) goes to `ab.delta`:
    /// the tensor-core path computes it first, the CUDA-core dq kernel computes it itself.
    fn attention_backward(
        &self,
        ab: &AttnBufs,
        n: usize,
        t: usize,
        p: f32,
        seed: u64,
    ) -> Result<(), CudaError> {
        let nh = self.config.n_head;
        let grid = (t.div_ceil(FA_ROWS), (n / t) * nh);
        let tail = [Arg::I(t), Arg::I(nh), Arg::F(p), Arg::U(seed)];
        let (dq, threads) = self.attention_kernel("flash_backward_dq", "flash_tc_backward_dq");
        let mut args = vec![Arg::P(ab.dqkv), Arg::P(ab.delta), Arg::P(ab.dout)];
        if self.tensor_core_attention() {
            let delta_args = [
                Arg::P(ab.delta),
                Arg::P(ab.dout),
                Arg::P(ab.out),
                Arg::I(n),
                Arg::I(t),
                Arg::I(nh),
            ];
            self.dev.launch_n("flash_tc_delta", n * nh, &delta_args)?;
        } else {
            args.push(Arg::P(ab.out));
        }
        args.extend([Arg::P(ab.qkv), Arg::P(ab.lse)]);
        args.extend(tail);
        self.dev.launch(&dq, grid, threads, &args)?;
        let (dkdv, _) = self.attention_kernel("flash_backward_dkdv", "flash_tc_backward_dkdv");
        let mut args = vec![
            Arg::P(ab.dqkv),
            Arg::P(ab.delta),
            Arg::P(ab.dout),
            Arg::P(ab.qkv),
            Arg::P(ab.lse),
        ];
        args.extend(tail);
        self.dev.launch(&dkdv, grid, threads, &args)
    }

    /// Host f32 copy of `len` floatX values at `src`.
    fn download_x(&self, src: u64, len: usize) -> Result<Vec<f32>, CudaError> {
        match self.dev.dtype {
            Dtype::F32 => {
                let mut h = vec![0f32; len];
                self.dev.dtoh(&mut h, src)?;
                Ok(h)
            }
            Dtype::Bf16 => {
                let mut h = vec![0u16; len];
                self.dev.dtoh(&mut h, src)?;
                Ok(h.iter()
                    .map(|&b| f32::from_bits((b as u32) << 16))
                    .collect())
            }
        }
    }

    /// The fused attention alone, on host data (for tests against the CPU op): `qkv` (B, T, 3C)
    /// and `dout` (B, T, C) f32, rounded to the model's dtype on upload; returns `out` (B, T, C)
    /// and `dqkv` (B, T, 3C) as f32. No dropout. Runs the same kernels as a training step
    /// (tensor-core or CUDA-core, as the model chose) in the scratch of layer 0.
    pub fn attention_op(
        &mut self,
        qkv: &[f32],
        dout: &[f32],
        t: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        let c = self.config.n_embd;
        let n = dout.len() / c;
        if t == 0
            || !n.is_multiple_of(t)
            || qkv.len() != 3 * n * c
            || dout.len() != n * c
            || t > self.config.block_size
        {
            return Err(CudaError::Input(format!(
                "attention_op: {} qkv and {} dout values for rows of {t}",
                qkv.len(),
                dout.len()
            )));
        }
        self.ensure(n)?;
        let a = self.acts.as_ref().expect("ensured");
        let la = a.layers[0];
        let up = |dst: u64, x: &[f32]| match self.dev.dtype {
            Dtype::F32 => self.dev.htod(dst, x),
            Dtype::Bf16 => {
                let bits: Vec<u16> = x
                    .iter()
                    .map(|&v| ferrogpt_cuda::reference::bf16_bits(v))
                    .collect();
                self.dev.htod(dst, &bits)
            }
        };
        up(a.p(la.qkv), qkv)?;
        up(a.p(a.dln), dout)?;
        let ab = a.attn(&la);
        self.attention_forward(&ab, n, t, 0.0, 0)?;
        self.attention_backward(&ab, n, t, 0.0, 0)?;
        Ok((
            self.download_x(ab.out, n * c)?,
            self.download_x(ab.dqkv, 3 * n * c)?,
        ))
    }

    /// Per-kernel times under `FERROGPT_GPU_PROFILE=1`: (name, seconds, calls), longest first.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        self.dev.profile()
    }

    /// Forgets the profile so far.
    pub fn reset_profile(&self) {
        self.dev.reset_profile()
    }

    /// Waits for the GPU (for timing).
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.dev.gpu.synchronize()
    }
}
