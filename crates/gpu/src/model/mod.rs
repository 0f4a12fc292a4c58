//! GPT-2 and Llama on the GPU: the same model as `ferrogpt_model::Gpt`, for every config it
//! takes, forward and backward written out layer by layer (llm.c style) over device buffers,
//! with the parameter layout of `ParamLayout` so weights, gradients and moments are each one
//! flat allocation.
//!
//! What a config selects here: LayerNorm with biases (GPT-2) or RMSNorm (Llama); GELU on F or
//! SwiGLU on [gate | up] (2F); learned positions or RoPE (a pass over the packed qkv after its
//! product, and the inverse pass over dqkv; the tables are uploaded once. RoPE inside the
//! attention kernels was built and tested (commit bc3620b) and lost: turning every streamed
//! q/k tile in shared memory costs the tensor-core kernels a barrier and a pass per tile, more
//! than the two passes here; see docs/benchmarks.md); NH query heads over
//! KV key/value heads in both attention paths; linear weights (in, out) (GPT-2) or (out, in)
//! (Llama: cuBLAS reads them transposed, no copies); the LM head tied to wte or its own.
//!
//! Precision ([`Dtype`]): `F32` runs everything in f32. `Bf16` stores activations, activation
//! gradients and a working copy of the weights in bf16 and multiplies in bf16 on the tensor
//! cores (f32 accumulation); master weights, weight gradients, AdamW moments, LayerNorm
//! statistics, the softmax/cross-entropy and every reduction stay f32. The optimizer writes
//! the bf16 copy in the same pass as the master weights.
//!
//! What crosses the bus per micro-batch: the token ids (with their order by token, for the
//! deterministic embedding backward) in, one f32 loss out. Gradient norms: one f32 out.
//!
//! The files, in the order of a training step:
//! - `acts.rs`: the activation memory plan (one allocation, typed views per layer).
//! - `forward.rs`, `backward.rs`: the passes, one method per layer kind (embeddings,
//!   attention sublayer, MLP sublayer, head, loss), each backward under its forward's name.
//! - `optim.rs`: the gradient and optimizer state; zeroing, all-reduce, norm, update.
//! - `decode.rs`: sampling with a key/value cache (one new position per step).
//! - `launch.rs`: one typed launch per CUDA kernel, the only code that passes raw
//!   addresses to kernels (through `crate::raw`).

mod acts;
mod backward;
mod decode;
mod forward;
mod launch;
mod optim;

use ferrogpt_core::Param;
use ferrogpt_cuda::{CudaError, Gpu};
use ferrogpt_model::config::Family;
use ferrogpt_model::{GptConfig, ParamLayout};

pub use optim::{OptKind, OptState, Update};

use crate::lt::Lt;
use crate::raw::{Buf, Dev, DevPtr, HEAD_SIZES, X};
use crate::Dtype;
use acts::Acts;
use forward::Pass;
use launch::{Flash, Rope};
use optim::TrainState;

/// Losses (or norms) the result buffer holds before the host reads them back.
const OUT_SLOTS: usize = 64;

/// A GPT-2 or Llama model on one GPU. See the module doc for precision and data movement.
pub struct GpuModel {
    dev: Dev,
    /// The model's description, as given to [`GpuModel::new`]. Read it; changing it does not
    /// change the buffers, which were sized from it.
    pub config: GptConfig,
    /// Where each tensor lives in the flat parameter, gradient and moment buffers (from
    /// `config`; the same layout as the CPU model and the checkpoints).
    pub layout: ParamLayout,
    params: Buf<f32>,         // (P) master weights
    params_x: Option<Buf<X>>, // (P) bf16 working copy (None in f32: the master weights are read)
    /// The weights the passes read: `params_x`, else `params` (f32 is floatX in fp32).
    weights: DevPtr<X>,
    train: Option<TrainState>,
    acts: Option<Acts>,
    out: Buf<f32>, // (OUT_SLOTS): results read back by the host
    /// RoPE's cos and sin tables (maxT, HS/2) f32, with rotary positions.
    rope: Option<(Buf<f32>, Buf<f32>)>,
    tc_attention: bool,
    /// cuBLASLt for the forward linears with a fused epilogue (bf16; None: plain cuBLAS and
    /// our bias kernels, as in fp32, or with FERROGPT_CUBLASLT=0).
    lt: Option<Lt>,
    /// Activation recomputation level (0, 1, 2: see `acts.rs`).
    recompute: u8,
    /// The key/value cache of incremental decoding (`decode.rs`), made on first use.
    kv: Option<decode::KvCache>,
    /// Whether decoding steps replay a captured CUDA graph (`decode.rs`): on unless
    /// FERROGPT_GPU_GRAPHS=0 or `set_decode_graphs(false)`, and off after a refused capture.
    graphs: bool,
}

/// Where a model's GPU memory goes, in bytes (see [`GpuModel::memory`]).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// f32 master weights.
    pub weights: usize,
    /// The bf16 working copy (0 in fp32).
    pub weights_copy: usize,
    /// f32 gradients (0 for inference).
    pub grads: usize,
    /// Optimizer state: AdamW's two moments, SGD's one (0 for inference).
    pub optimizer: usize,
    /// Activations, activation gradients and scratch for the largest batch so far.
    pub activations: usize,
    /// Rows (B·T) the activations are sized for.
    pub rows: usize,
    /// The activation recomputation level (0, 1 or 2; see [`GpuModel::set_recompute`]).
    pub recompute: u8,
    /// The whole GPU's memory in use (every process, the CUDA context and cuBLAS workspaces
    /// included: `cuMemGetInfo`) and its size. The model allocates everything up front, so
    /// after a step this is the run's peak.
    pub in_use: usize,
    /// The GPU's memory, in bytes.
    pub total: usize,
}

impl std::fmt::Display for Memory {
    /// "GPU memory: weights 0.50 GB + bf16 copy 0.25, gradients 0.50, AdamW 1.00, activations
    /// 12.3 (16384 rows); 15.1 of 79.6 GB in use" (GB = 1e9 bytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gb = |b: usize| b as f64 / 1e9;
        write!(f, "GPU memory: weights {:.2} GB", gb(self.weights))?;
        if self.weights_copy > 0 {
            write!(f, " + bf16 copy {:.2}", gb(self.weights_copy))?;
        }
        if self.grads > 0 {
            write!(
                f,
                ", gradients {:.2}, optimizer state {:.2}",
                gb(self.grads),
                gb(self.optimizer)
            )?;
        }
        write!(
            f,
            ", activations {:.2} ({} rows{}); {:.1} of {:.1} GB in use on the GPU",
            gb(self.activations),
            self.rows,
            match self.recompute {
                0 => String::new(),
                r => format!(", --recompute {r}"),
            },
            gb(self.in_use),
            gb(self.total)
        )
    }
}

impl GpuModel {
    /// Uploads `params` (flat, `ParamLayout` order) to `gpu`; with `opt`, also the optimizer
    /// state and a gradient buffer (training). Errors: a config the model crate refuses, a
    /// head size the fused attention is not built for, an MLP width that is not a multiple of
    /// 8 (the vector kernels'), a wrong buffer length, any CUDA failure.
    pub fn new(
        gpu: Gpu,
        dtype: Dtype,
        config: GptConfig,
        params: &[f32],
        opt: Option<OptState>,
    ) -> Result<GpuModel, CudaError> {
        config
            .validate()
            .map_err(|e| CudaError::Input(e.to_string()))?;
        let hs = config.head_size();
        if !HEAD_SIZES.contains(&hs) {
            return Err(CudaError::Input(format!(
                "head size {hs} (n_embd / n_head): the GPU attention is built for head sizes {HEAD_SIZES:?}"
            )));
        }
        let f = config.ffn();
        if !f.is_multiple_of(8) {
            return Err(CudaError::Input(format!(
                "MLP width {f} (ffn_hidden): the GPU kernels take multiples of 8"
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
        let p = Buf::<f32>::new(&dev, n)?;
        dev.htod(p.ptr(), params)?;
        let params_x = if dtype.f32_storage() {
            None
        } else {
            let px = Buf::<X>::new(&dev, n)?;
            launch::to_floatx(&dev, px.ptr(), p.ptr(), n)?;
            Some(px)
        };
        let weights = match &params_x {
            Some(px) => px.ptr(),
            None => p.ptr().as_x(dtype).expect("fp32"),
        };
        let train = match opt {
            None => None,
            Some(o) => Some(TrainState::new(&dev, n, o)?),
        };
        let out = Buf::new(&dev, OUT_SLOTS)?;
        let rope = if config.rotary() {
            let inv_freq = config.rope_inv_freq();
            let (cos, sin) = ferrogpt_core::ops::rope::table::<f32>(config.block_size, &inv_freq);
            let (cb, sb) = (Buf::new(&dev, cos.len())?, Buf::new(&dev, sin.len())?);
            dev.htod(cb.ptr(), &cos)?;
            dev.htod(sb.ptr(), &sin)?;
            Some((cb, sb))
        } else {
            None
        };
        let tc_attention = dtype == Dtype::Bf16
            && config.head_size() == 64
            && std::env::var("FERROGPT_ATTENTION").map_or(true, |v| v != "cuda-core");
        // cuBLASLt's algorithms are picked for 256-byte aligned operands: every GPT-2 weight
        // starts at a multiple of C or F elements, so both must be multiples of 128 (bf16).
        // (Only GPT-2's biased linears use its epilogues.)
        let lt = if dtype == Dtype::Bf16
            && config.family == Family::Gpt2
            && config.n_embd.is_multiple_of(128)
            && f.is_multiple_of(128)
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
            weights,
            train,
            acts: None,
            out,
            rope,
            tc_attention,
            lt,
            recompute: 0,
            kv: None,
            graphs: std::env::var("FERROGPT_GPU_GRAPHS").map_or(true, |v| v != "0"),
        })
    }

    /// Recompute activations in the backward pass instead of keeping them (llm.c's `-r`):
    /// 0 keeps everything, 1 recomputes the MLP's activation (GELU or SwiGLU) output, 2 also
    /// the norms' outputs. Same results (the same kernels on the same inputs), less memory,
    /// a little more time. Takes effect at the next pass. Errors: a level above 2.
    pub fn set_recompute(&mut self, level: u8) -> Result<(), CudaError> {
        if level > 2 {
            return Err(CudaError::Input(format!(
                "--recompute {level}: the levels are 0 (none), 1 (the MLP activation) and 2 (also the norms)"
            )));
        }
        self.recompute = level;
        Ok(())
    }

    /// Where this model's GPU memory goes (see [`Memory`]).
    pub fn memory(&self) -> Result<Memory, CudaError> {
        let p = self.layout.total;
        let (free, total) = self
            .dev
            .gpu
            .context()
            .mem_get_info()
            .map_err(|e| CudaError::Input(format!("cuMemGetInfo: {e}")))?;
        let (grads, optimizer) = match &self.train {
            Some(t) => (4 * p, t.state_bytes()),
            None => (0, 0),
        };
        let (activations, rows) = match &self.acts {
            Some(a) => (
                Acts::bytes(&self.config, a.cap, a.recompute, self.dev.dtype),
                a.cap,
            ),
            None => (0, 0),
        };
        Ok(Memory {
            weights: 4 * p,
            weights_copy: self.params_x.as_ref().map_or(0, |_| 2 * p),
            grads,
            optimizer,
            activations,
            rows,
            recompute: self.recompute,
            in_use: total - free,
            total,
        })
    }

    /// "NVIDIA H100 80GB HBM3 (bf16)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.dev.gpu.name(), self.dev.dtype.name())
    }

    /// The precision the model was opened in.
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

    /// The fused attention kernels this model runs.
    fn flash(&self) -> Flash {
        Flash {
            tc: self.tensor_core_attention(),
            nh: self.config.n_head,
            kv: self.config.kv_heads(),
            hs: self.config.head_size(),
        }
    }

    /// The rotary tables and head shape, with rotary positions.
    fn rope(&self) -> Option<Rope> {
        self.rope.as_ref().map(|(c, s)| Rope {
            cos: c.ptr(),
            sin: s.ptr(),
            nh: self.config.n_head,
            kv: self.config.kv_heads(),
            hs: self.config.head_size(),
        })
    }

    /// Parameter `p` in the working copy (floatX).
    fn w(&self, p: Param) -> DevPtr<X> {
        self.weights.slice(p.offset, p.len())
    }

    /// The f32 gradient of parameter `p`.
    fn g(&self, p: Param) -> DevPtr<f32> {
        let t = self.train.as_ref().expect("training state");
        t.grads.ptr().slice(p.offset, p.len())
    }

    /// Activations for `n` rows at the current recomputation level, reallocated when smaller
    /// or laid out for another level. Errors: out of memory, in one line that says what holds
    /// the GPU and what to try.
    fn ensure(&mut self, n: usize) -> Result<(), CudaError> {
        let r = self.recompute;
        if self
            .acts
            .as_ref()
            .is_none_or(|a| a.cap < n || a.recompute != r)
        {
            self.acts = None; // free the old buffers first
            if let Some(kv) = &mut self.kv {
                kv.forget_graph(); // it writes the old buffers
            }
            let acts = Acts::new(&self.dev, &self.config, n, r).map_err(|e| {
                let need = Acts::bytes(&self.config, n, r, self.dev.dtype) as f64 / 1e9;
                match self.memory() {
                    Ok(m) => CudaError::Input(format!(
                        "out of GPU memory: the activations of {n} rows (B·T) need {need:.1} GB, and {:.1} of {:.1} GB are in use (weights, gradients and optimizer state {:.1} GB); use a smaller --batch-size with --grad-accum{} ({e})",
                        m.in_use as f64 / 1e9,
                        m.total as f64 / 1e9,
                        (m.weights + m.weights_copy + m.grads + m.optimizer) as f64 / 1e9,
                        if r < 2 { ", or --recompute" } else { "" }
                    )),
                    Err(_) => e,
                }
            })?;
            self.acts = Some(acts);
        }
        Ok(())
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
            self.backward(Pass { n, t, p, seed }, u)?;
        }
        Ok(sum.expect("targets given") / n as f64)
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
        self.dev.dtoh(&mut h, a.losses)?;
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
            self.dev.dtoh(&mut sums, self.out.ptr())?;
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
        let (vp, v) = (self.config.padded_vocab_size, self.config.vocab_size);
        let b = tokens.len() / t;
        let mut out = Vec::with_capacity(b * v);
        for r in 0..b {
            let row = a.logits.slice((r * t + t - 1) * vp, v);
            out.extend(self.download_x(row)?);
        }
        Ok(out)
    }

    /// Host copy of the f32 master weights.
    pub fn params(&self) -> Result<Vec<f32>, CudaError> {
        let mut h = vec![0f32; self.layout.total];
        self.dev.dtoh(&mut h, self.params.ptr())?;
        Ok(h)
    }

    /// Host copy of the gradients (for tests).
    pub fn grads(&self) -> Result<Vec<f32>, CudaError> {
        let mut h = vec![0f32; self.layout.total];
        self.dev.dtoh(&mut h, self.train_state()?.grads.ptr())?;
        Ok(h)
    }

    /// The GPU the model lives on.
    pub fn gpu(&self) -> &ferrogpt_cuda::Gpu {
        &self.dev.gpu
    }

    /// Host f32 copy of the floatX values of `src`.
    fn download_x(&self, src: DevPtr<X>) -> Result<Vec<f32>, CudaError> {
        match self.dev.dtype {
            Dtype::F32 | Dtype::Tf32 => {
                let mut h = vec![0f32; src.len()];
                self.dev.dtoh(&mut h, src)?;
                Ok(h)
            }
            Dtype::Bf16 => {
                let mut h = vec![0u16; src.len()];
                self.dev.dtoh(&mut h, src)?;
                Ok(h.iter()
                    .map(|&b| f32::from_bits((b as u32) << 16))
                    .collect())
            }
        }
    }

    /// The fused attention alone, on host data (for tests against the CPU op): `qkv` (B, T, W)
    /// with W = (NH + 2·KV)·HS and `dout` (B, T, C) f32, rounded to the model's dtype on upload;
    /// returns `out` (B, T, C) and `dqkv` (B, T, W) as f32. No dropout, no rotation. Runs the
    /// same kernels as a training step (tensor-core or CUDA-core, as the model chose) in the
    /// scratch of layer 0.
    pub fn attention_op(
        &mut self,
        qkv: &[f32],
        dout: &[f32],
        t: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        let (c, w) = (self.config.n_embd, self.config.qkv_width());
        let n = dout.len() / c;
        if t == 0
            || !n.is_multiple_of(t)
            || qkv.len() != w * n
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
        let up = |dst: DevPtr<X>, x: &[f32]| match self.dev.dtype {
            Dtype::F32 | Dtype::Tf32 => self.dev.htod(dst, x),
            Dtype::Bf16 => {
                let bits: Vec<u16> = x
                    .iter()
                    .map(|&v| ferrogpt_cuda::reference::bf16_bits(v))
                    .collect();
                self.dev.htod(dst, &bits)
            }
        };
        up(la.qkv, qkv)?;
        up(a.dln, dout)?;
        let ab = a.attn(&la);
        let ps = Pass {
            n,
            t,
            p: 0.0,
            seed: 0,
        };
        self.attention_forward(&ab, ps, 0)?;
        self.attention_backward(&ab, ps, 0)?;
        Ok((
            self.download_x(ab.out.slice(0, n * c))?,
            self.download_x(ab.dqkv.slice(0, w * n))?,
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
