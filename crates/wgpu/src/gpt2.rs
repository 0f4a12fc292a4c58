//! The GPT-2 forward pass on the GPU, every layer one of our WGSL kernels
//! (`kernels/gpt2/*.wgsl`), with a key/value cache for decoding.
//!
//! ```text
//! x = wte[tokens] + wpe[pos0..pos0+R]                       embed.wgsl        (R, C)
//! for each block:
//!     h = layernorm_1(x)                                    layernorm.wgsl    (R, C)
//!     qkv = h · c_attn + b                                  linear.wgsl       (R, 3C)
//!                                  (linear_rows.wgsl for R ≤ 4: one column per invocation)
//!     cache[pos0..pos0+R] = k, v                            kv_store.wgsl     (NH, maxT, HS)
//!     a = causal attention of q over cache[0..=pos]          attention.wgsl    (R, C)
//!     x += a · c_proj + b                                   linear.wgsl (residual in the epilogue)
//!     h = layernorm_2(x)
//!     f = gelu(h · c_fc + b)                                linear.wgsl, gelu.wgsl (R, 4C)
//!     x += f · mlp.c_proj + b
//! logits = layernorm_f(x)[rows] · wteᵀ                       head.wgsl         (rows, Vp)
//!                                  (head_rows.wgsl for ≤ 4 rows: a workgroup per vocabulary row)
//! ```
//!
//! R rows at positions pos0.. of one sequence: the whole prompt (prefill, pos0 = 0) or the new
//! tokens of a decoding step (pos0 = tokens already cached). Everything for one call is recorded
//! in one command encoder and submitted once; only the logits come back. Weights are uploaded
//! once, one buffer per tensor; the token embedding is split into chunks of vocabulary rows
//! where it is larger than one storage binding (128 MiB on lavapipe, GPT-2's is 154 MB).
//!
//! Precision: f32 throughout, sums in a different order than the CPU engine's (the tests
//! bound the difference of the logits).

use crate::{Gpu, GpuBuffer, WgpuError};
use ferrogpt_model::config::{Family, Position};
use ferrogpt_model::{GptConfig, ParamLayout};

/// The kernels, each one file; compiled once per model.
const KERNELS: [(&str, &str); 9] = [
    ("head_rows", include_str!("../kernels/gpt2/head_rows.wgsl")),
    ("embed", include_str!("../kernels/gpt2/embed.wgsl")),
    (
        "linear_rows",
        include_str!("../kernels/gpt2/linear_rows.wgsl"),
    ),
    ("layernorm", include_str!("../kernels/gpt2/layernorm.wgsl")),
    ("linear", include_str!("../kernels/gpt2/linear.wgsl")),
    ("head", include_str!("../kernels/gpt2/head.wgsl")),
    ("kv_store", include_str!("../kernels/gpt2/kv_store.wgsl")),
    ("attention", include_str!("../kernels/gpt2/attention.wgsl")),
    ("gelu", include_str!("../kernels/gpt2/gelu.wgsl")),
];

/// Products of at most this many rows (decoding) go to `linear_rows.wgsl`, larger ones to the
/// tiled `linear.wgsl`.
const LINEAR_ROWS_MAX: usize = 4;

/// GPT-2's LayerNorm epsilon (as `ferrogpt_core::ops::layernorm`).
const LN_EPS: f32 = 1e-5;

struct Block {
    ln_1: (GpuBuffer, GpuBuffer),
    attn: (GpuBuffer, GpuBuffer),
    attn_proj: (GpuBuffer, GpuBuffer),
    ln_2: (GpuBuffer, GpuBuffer),
    fc: (GpuBuffer, GpuBuffer),
    fc_proj: (GpuBuffer, GpuBuffer),
    /// The key and value cache, (NH, maxT, HS) each.
    k: GpuBuffer,
    v: GpuBuffer,
}

/// Activations for up to `rows` rows.
struct Acts {
    rows: usize,
    tokens: GpuBuffer, // (R) u32 bits
    x: GpuBuffer,      // (R, C)
    h: GpuBuffer,      // (R, C)
    qkv: GpuBuffer,    // (R, 3C)
    att: GpuBuffer,    // (R, C)
    fc: GpuBuffer,     // (R, 4C)
    scores: GpuBuffer, // (R, NH, maxT)
}

/// A GPT-2 model's weights on the device, its pipelines and its key/value cache.
pub struct Gpt2 {
    gpu: Gpu,
    cfg: GptConfig,
    pipelines: Vec<(&'static str, wgpu::ComputePipeline)>,
    /// Chunks of the token embedding: (first vocabulary row, rows, buffer).
    wte: Vec<(usize, usize, GpuBuffer)>,
    wpe: GpuBuffer,
    blocks: Vec<Block>,
    ln_f: (GpuBuffer, GpuBuffer),
    acts: Option<Acts>,
    /// The largest buffer, in f32 values.
    max_elems: usize,
}

/// What a forward call returns the logits of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadRows {
    /// Only the last row (decoding, sampling).
    Last,
    /// Every row (evaluation).
    All,
}

impl Gpt2 {
    /// Uploads the model (`params` flat in `layout` order) to `gpu` and compiles the kernels.
    /// Errors: a model other than GPT-2 with learned positions ([`WgpuError::Shape`] says which),
    /// a tensor past the device's limits, a kernel the device refuses.
    pub fn new(
        gpu: Gpu,
        cfg: &GptConfig,
        layout: &ParamLayout,
        params: &[f32],
    ) -> Result<Gpt2, WgpuError> {
        let max = gpu.max_elements(crate::Input::F32);
        Gpt2::with_max_elements(gpu, cfg, layout, params, max)
    }

    /// [`Gpt2::new`] with the token embedding and the logits split as if one buffer held at
    /// most `max_elems` values (at most the device's limit), so that tests can reach the
    /// splitting with small models.
    pub fn with_max_elements(
        gpu: Gpu,
        cfg: &GptConfig,
        layout: &ParamLayout,
        params: &[f32],
        max_elems: usize,
    ) -> Result<Gpt2, WgpuError> {
        if cfg.family != Family::Gpt2 || cfg.pos != Position::Learned {
            return Err(WgpuError::Shape(format!(
                "the wgpu engine runs GPT-2 models with learned positions; this one is {} with {} positions (run it with --device cpu)",
                cfg.family.name(),
                if cfg.rotary() { "rotary" } else { "learned" }
            )));
        }
        if params.len() < layout.total {
            return Err(WgpuError::Shape(format!(
                "{} parameters for a layout of {}",
                params.len(),
                layout.total
            )));
        }
        let max_elems = max_elems.min(gpu.max_elements(crate::Input::F32));
        if max_elems < cfg.n_embd {
            return Err(WgpuError::TooLarge {
                what: "one row of the token embedding".into(),
                bytes: 4 * cfg.n_embd as u64,
                limit: 4 * max_elems as u64,
            });
        }
        let view = |p: ferrogpt_core::Param| &params[p.offset..p.offset + p.len()];
        let up = |p: ferrogpt_core::Param| gpu.upload(view(p));
        let pair = |w: ferrogpt_core::Param, b: Option<ferrogpt_core::Param>| {
            let b = b.ok_or_else(|| WgpuError::Shape("a GPT-2 layer without its bias".into()))?;
            Ok::<_, WgpuError>((up(w)?, up(b)?))
        };
        let (c, t) = (cfg.n_embd, cfg.block_size);
        let vp = layout.wte.rows;
        let chunk = vp.min(max_elems / c).max(1);
        let wte_all = view(layout.wte);
        let mut wte = vec![];
        for v0 in (0..vp).step_by(chunk) {
            let n = chunk.min(vp - v0);
            wte.push((v0, n, gpu.upload(&wte_all[v0 * c..(v0 + n) * c])?));
        }
        let wpe = up(layout
            .wpe
            .ok_or_else(|| WgpuError::Shape("no position table".into()))?)?;
        let mut blocks = vec![];
        for b in &layout.blocks {
            blocks.push(Block {
                ln_1: pair(b.ln_1_w, b.ln_1_b)?,
                attn: pair(b.attn_w, b.attn_b)?,
                attn_proj: pair(b.attn_proj_w, b.attn_proj_b)?,
                ln_2: pair(b.ln_2_w, b.ln_2_b)?,
                fc: pair(b.fc_w, b.fc_b)?,
                fc_proj: pair(b.fc_proj_w, b.fc_proj_b)?,
                k: gpu.zeros(t * c)?,
                v: gpu.zeros(t * c)?,
            });
        }
        let ln_f = pair(layout.ln_f_w, layout.ln_f_b)?;
        let mut pipelines = vec![];
        for (name, src) in KERNELS {
            let module = gpu
                .device()
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                });
            let pipeline = gpu
                .device()
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                });
            gpu.check(&format!("compiling kernels/gpt2/{name}.wgsl"))?;
            pipelines.push((name, pipeline));
        }
        gpu.synchronize()?;
        Ok(Gpt2 {
            gpu,
            cfg: cfg.clone(),
            pipelines,
            wte,
            wpe,
            blocks,
            ln_f,
            acts: None,
            max_elems,
        })
    }

    /// V: the logits' width (the padding of the vocabulary dropped).
    pub fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn pipeline(&self, name: &str) -> &wgpu::ComputePipeline {
        &self
            .pipelines
            .iter()
            .find(|(n, _)| *n == name)
            .expect("every kernel is compiled in Gpt2::new")
            .1
    }

    /// Activation buffers for `rows` rows (kept and reused; grown when too small).
    fn ensure_acts(&mut self, rows: usize) -> Result<(), WgpuError> {
        if self.acts.as_ref().is_some_and(|a| a.rows >= rows) {
            return Ok(());
        }
        let (c, nh, t) = (self.cfg.n_embd, self.cfg.n_head, self.cfg.block_size);
        let g = &self.gpu;
        self.acts = Some(Acts {
            rows,
            tokens: g.zeros(rows)?,
            x: g.zeros(rows * c)?,
            h: g.zeros(rows * c)?,
            qkv: g.zeros(rows * 3 * c)?,
            att: g.zeros(rows * c)?,
            fc: g.zeros(rows * self.cfg.ffn())?,
            scores: g.zeros(rows * nh * t)?,
        });
        Ok(())
    }

    /// Runs `tokens` (R ids of one sequence, at positions pos0..pos0+R, after pos0 tokens
    /// already in the cache) through the model, storing their keys and values in the cache,
    /// and returns the logits of the last row or of every row (rows × vocab_size, padding
    /// dropped). Errors: no tokens, past the block size, ids past the vocabulary, device errors.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        head: HeadRows,
    ) -> Result<Vec<f32>, WgpuError> {
        let cfg = self.cfg.clone();
        let (r, c, nh, t) = (tokens.len(), cfg.n_embd, cfg.n_head, cfg.block_size);
        let hs = cfg.head_size();
        if r == 0 || pos0 + r > t {
            return Err(WgpuError::Shape(format!(
                "{r} tokens after {pos0} cached: the model's block size is {t}"
            )));
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(WgpuError::Shape(format!(
                "token id {id} is past the vocabulary ({})",
                cfg.vocab_size
            )));
        }
        self.ensure_acts(r)?;
        let acts = self.acts.as_ref().expect("ensure_acts");
        let bits: Vec<f32> = tokens.iter().map(|&id| f32::from_bits(id)).collect();
        self.gpu
            .queue()
            .write_buffer(&acts.tokens.buffer, 0, &f32_bytes(&bits));
        let mut enc = Encoder::new(self);
        let f = cfg.ffn();
        // x = wte[tokens] + wpe[pos]
        for (v0, n, chunk) in &self.wte {
            let p = [r, c, r, pos0, *v0, v0 + n, 0, 0];
            enc.flat(
                "embed",
                &[&acts.tokens, chunk, &self.wpe, &acts.x],
                &p,
                r * c,
            );
        }
        for b in &self.blocks {
            enc.layernorm(&acts.x, &b.ln_1, &acts.h, r, c);
            enc.linear(&acts.h, &b.attn, &acts.qkv, r, 3 * c, c, false);
            let p = [r, c, hs, t, pos0, 0, 0, 0];
            enc.flat("kv_store", &[&acts.qkv, &b.k, &b.v], &p, r * c);
            let scale = (1.0 / (hs as f32).sqrt()).to_bits() as usize;
            let p = [r, c, nh, hs, t, pos0, scale, 0];
            enc.dispatch(
                "attention",
                &[&acts.qkv, &b.k, &b.v, &acts.scores, &acts.att],
                &p,
                (r as u32, nh as u32),
            );
            enc.linear(&acts.att, &b.attn_proj, &acts.x, r, c, c, true);
            enc.layernorm(&acts.x, &b.ln_2, &acts.h, r, c);
            enc.linear(&acts.h, &b.fc, &acts.fc, r, f, c, false);
            enc.flat("gelu", &[&acts.fc], &[r * f, 0, 0, 0], r * f);
            enc.linear(&acts.fc, &b.fc_proj, &acts.x, r, c, f, true);
        }
        enc.layernorm(&acts.x, &self.ln_f, &acts.h, r, c);
        // The head over the rows asked for, in slices of the vocabulary that fit one buffer.
        let (first, rows) = match head {
            HeadRows::Last => (r - 1, 1),
            HeadRows::All => (0, r),
        };
        let v = cfg.vocab_size;
        let mut slices = vec![];
        for (v0, n, chunk) in &self.wte {
            let used = (*n).min(v.saturating_sub(*v0));
            let step = (self.max_elems / rows).max(1);
            for s0 in (0..used).step_by(step) {
                let nc = step.min(used - s0);
                let out = self.gpu.zeros(rows * nc)?;
                let p = [rows, nc, c, s0, first * c, 0, 0, 0];
                if rows <= LINEAR_ROWS_MAX {
                    // One workgroup per column of the slice, laid out past 65,535 in y.
                    let x = nc.min(65535);
                    let groups = (x as u32, nc.div_ceil(x) as u32);
                    enc.dispatch("head_rows", &[&acts.h, chunk, &out], &p, groups);
                } else {
                    let groups = (nc.div_ceil(16) as u32, rows.div_ceil(16) as u32);
                    enc.dispatch("head", &[&acts.h, chunk, &out], &p, groups);
                }
                slices.push((v0 + s0, nc, out));
            }
        }
        enc.submit()?;
        let mut logits = vec![0f32; rows * v];
        for (col0, nc, out) in &slices {
            let vals = self.gpu.download(out)?;
            for (i, row) in vals.chunks_exact(*nc).enumerate() {
                logits[i * v + col0..i * v + col0 + nc].copy_from_slice(row);
            }
        }
        Ok(logits)
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One forward call's commands: each dispatch its own compute pass, uniform buffer and bind
/// group, all in one command encoder.
struct Encoder<'m> {
    model: &'m Gpt2,
    enc: wgpu::CommandEncoder,
}

impl<'m> Encoder<'m> {
    fn new(model: &'m Gpt2) -> Self {
        let enc = model
            .gpu
            .device()
            .create_command_encoder(&Default::default());
        Encoder { model, enc }
    }

    /// Dispatches `kernel` over `groups` workgroups with `buffers` at bindings 0.. and the
    /// uniform words `params` after them.
    fn dispatch(
        &mut self,
        kernel: &str,
        buffers: &[&GpuBuffer],
        params: &[usize],
        groups: (u32, u32),
    ) {
        let device = self.model.gpu.device();
        let words: Vec<u8> = params
            .iter()
            .flat_map(|&w| (w as u32).to_le_bytes())
            .collect();
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(kernel),
            size: words.len().max(16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // Written before the submission of this encoder (queue writes go first).
        self.model.gpu.queue().write_buffer(&uniform, 0, &words);
        let pipeline = self.model.pipeline(kernel);
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.buffer.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: uniform.as_entire_binding(),
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    /// A kernel with one invocation per element of `len`, 256 a workgroup, the workgroups
    /// laid out in two dimensions past the 65,535 of one.
    fn flat(&mut self, kernel: &str, buffers: &[&GpuBuffer], params: &[usize], len: usize) {
        let groups = len.div_ceil(256).max(1);
        let (x, y) = if groups <= 65535 {
            (groups, 1)
        } else {
            (65535, groups.div_ceil(65535))
        };
        self.dispatch(kernel, buffers, params, (x as u32, y as u32));
    }

    fn layernorm(
        &mut self,
        x: &GpuBuffer,
        wb: &(GpuBuffer, GpuBuffer),
        out: &GpuBuffer,
        rows: usize,
        c: usize,
    ) {
        let p = [rows, c, LN_EPS.to_bits() as usize, 0];
        self.dispatch("layernorm", &[x, &wb.0, &wb.1, out], &p, (rows as u32, 1));
    }

    /// out (m, n) (+)= a (m, k) · w (k, n) + bias.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        a: &GpuBuffer,
        wb: &(GpuBuffer, GpuBuffer),
        out: &GpuBuffer,
        m: usize,
        n: usize,
        k: usize,
        residual: bool,
    ) {
        let p = [m, n, k, residual as usize];
        if m <= LINEAR_ROWS_MAX {
            let groups = (n.div_ceil(64) as u32, 1);
            self.dispatch("linear_rows", &[a, &wb.0, &wb.1, out], &p, groups);
        } else {
            let groups = (n.div_ceil(16) as u32, m.div_ceil(16) as u32);
            self.dispatch("linear", &[a, &wb.0, &wb.1, out], &p, groups);
        }
    }

    fn submit(self) -> Result<(), WgpuError> {
        let gpu = &self.model.gpu;
        gpu.queue().submit([self.enc.finish()]);
        gpu.check("running the GPT-2 forward pass")
    }
}
