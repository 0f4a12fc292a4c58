//! The reverse-mode tape.
//!
//! The model's forward pass calls one method per layer ([`Tape::linear`], [`Tape::attention`],
//! ...; GPT-2's layers and those of Llama-style models: [`Tape::rmsnorm`], [`Tape::rope`],
//! [`Tape::attention_gqa`], [`Tape::swiglu`]). Each call computes its output into a buffer owned by the tape and, when the tape is
//! recording, appends a `Node` that remembers what the backward pass needs. [`Tape::backward`]
//! then walks the nodes in reverse, calling each op's backward.
//!
//! * Activations are [`Var`]s: indices into the tape's buffers, each with a (rows, cols) shape.
//! * Parameters are [`Param`]s: ranges of one flat parameter buffer that the caller owns and
//!   passes in; their gradients accumulate into a flat gradient buffer of the same layout.
//! * Buffers are reused between steps: [`Tape::reset`] keeps their memory, and a model that
//!   records the same ops each step allocates nothing after the first.
//!
//! Parameter gradients go into the caller's flat gradient buffer in one of two modes
//! ([`Tape::backward_scaled`]): accumulate (`+=`, gradient accumulation over micro-batches for
//! free), or overwrite, where the buffer's stale contents are never read: the first op to
//! reach a parameter writes its gradient, later ones add, and parameters no op reached are
//! zeroed at the end. Overwriting spares a large model a memset of the whole buffer and the
//! first read of every weight gradient (0.5 GB each at gpt2-124m size) per step.

use crate::ops::{self, attention::Dims, Write};
use crate::{Float, Level};
use ferrogpt_gemm::GemmError;
use rand::Rng;

/// An activation on the tape: (rows, cols) row-major. An index into the tape's buffers, valid
/// until the next [`Tape::reset`], after which the same index names a new buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

/// A tensor inside the flat parameter buffer: `params[offset .. offset + rows*cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
///
/// Its gradient sits at the same range of the flat gradient buffer. Ops that take a `Param` read
/// it as a row-major (rows, cols) matrix; a vector (a bias, a norm's weight) is (1, C).
pub struct Param {
    /// Index of the first element in the flat buffer, in elements (not bytes).
    pub offset: usize,
    /// Rows of the row-major matrix.
    pub rows: usize,
    /// Columns of the row-major matrix.
    pub cols: usize,
}

impl Param {
    /// Elements: rows·cols.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    /// Whether it holds no element (rows or cols is 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `offset .. offset + rows·cols`: the slice of the parameter (and gradient) buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// What the backward pass needs of one recorded op.
#[derive(Clone, Debug)]
enum Node {
    Embedding {
        out: Var,
        tokens: usize,
        wte: Param,
        wpe: Option<Param>,
        t: usize,
    },
    LayerNorm {
        out: Var,
        x: Var,
        mean: Var,
        rstd: Var,
        w: Param,
        b: Param,
    },
    RmsNorm {
        out: Var,
        x: Var,
        rstd: Var,
        w: Param,
    },
    Rope {
        out: Var,
        x: Var,
        /// (T, HS/2) tables of the forward pass.
        cos: Var,
        sin: Var,
        t: usize,
        /// Rotated heads per row: NH + KV.
        heads: usize,
    },
    Linear {
        out: Var,
        x: Var,
        w: Param,
        bias: Option<Param>,
        transposed: bool,
    },
    Attention {
        out: Var,
        qkv: Var,
        att: Var,
        mask: Option<Var>,
        dims: Dims,
    },
    Gelu {
        out: Var,
        x: Var,
        /// tanh of the forward pass (not differentiated).
        th: Var,
    },
    Swiglu {
        out: Var,
        x: Var,
    },
    Add {
        out: Var,
        a: Var,
        b: Var,
    },
    Dropout {
        out: Var,
        x: Var,
        mask: Var,
    },
    SoftmaxCe {
        loss_of: Var,
        probs: Var,
        targets: usize,
        v: usize,
    },
}

impl Node {
    /// The var whose gradient this node propagates (none for the loss, which is seeded).
    fn output(&self) -> Option<Var> {
        match *self {
            Node::Embedding { out, .. }
            | Node::LayerNorm { out, .. }
            | Node::RmsNorm { out, .. }
            | Node::Rope { out, .. }
            | Node::Swiglu { out, .. }
            | Node::Linear { out, .. }
            | Node::Attention { out, .. }
            | Node::Gelu { out, .. }
            | Node::Add { out, .. }
            | Node::Dropout { out, .. } => Some(out),
            Node::SoftmaxCe { .. } => None,
        }
    }

    /// The parameters whose gradients this node writes.
    fn params(&self) -> [Option<Param>; 2] {
        match *self {
            Node::Embedding { wte, wpe, .. } => [Some(wte), wpe],
            Node::LayerNorm { w, b, .. } => [Some(w), Some(b)],
            Node::RmsNorm { w, .. } => [Some(w), None],
            Node::Linear { w, bias, .. } => [Some(w), bias],
            Node::Rope { .. }
            | Node::Swiglu { .. }
            | Node::Attention { .. }
            | Node::Gelu { .. }
            | Node::Add { .. }
            | Node::Dropout { .. }
            | Node::SoftmaxCe { .. } => [None, None],
        }
    }
}

/// The tape: activation buffers, their gradients, and the recorded ops.
pub struct Tape<T> {
    level: Level,
    recording: bool,
    vals: Vec<Vec<T>>,
    grads: Vec<Vec<T>>,
    /// Per var, during a backward pass: whether its gradient has been written yet. The first
    /// contribution overwrites (the buffer keeps last step's values: no zeroing), later ones
    /// add; a node whose output gradient was never written contributes nothing and is skipped.
    written: Vec<bool>,
    shapes: Vec<(usize, usize)>,
    /// Whether the var's gradient is needed (it is an op output or an input leaf).
    diff: Vec<bool>,
    used: usize,
    ints: Vec<Vec<u32>>,
    ints_used: usize,
    nodes: Vec<Node>,
    loss: Option<(Var, T)>,
    /// d loss for the backward pass (1 unless scaled).
    loss_scale: T,
    /// During an overwriting backward pass: the parameters whose gradient has been written
    /// (offset, length); `None` when accumulating.
    params_written: Option<Vec<(usize, usize)>>,
    /// During [`Tape::backward_with_norm`]: Σ g² of the parameter gradients finished so far.
    norm_sq: Option<f64>,
}

impl<T: Float> Tape<T> {
    /// A tape whose matrix products run at `level`. Errors if the level cannot run here.
    pub fn new(level: Level) -> Result<Self, GemmError> {
        level.available()?;
        Ok(Tape {
            level,
            recording: true,
            vals: Vec::new(),
            grads: Vec::new(),
            written: Vec::new(),
            shapes: Vec::new(),
            diff: Vec::new(),
            used: 0,
            ints: Vec::new(),
            ints_used: 0,
            nodes: Vec::new(),
            loss: None,
            loss_scale: T::ONE,
            params_written: None,
            norm_sq: None,
        })
    }

    /// The matmul level the tape's products (linear layers, attention) run at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Forgets every var and node, keeping the memory. `recording = false` runs forward only
    /// (evaluation, sampling): no nodes are kept and dropout is the identity.
    pub fn reset(&mut self, recording: bool) {
        self.recording = recording;
        self.used = 0;
        self.ints_used = 0;
        self.nodes.clear();
        self.loss = None;
    }

    /// Whether ops are being recorded for a backward pass (set by [`Tape::reset`]; a new tape
    /// records).
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// A new (rows, cols) buffer; its content is unspecified until written.
    fn alloc(&mut self, rows: usize, cols: usize, diff: bool) -> Var {
        let len = rows * cols;
        if self.used == self.vals.len() {
            self.vals.push(Vec::new());
            self.grads.push(Vec::new());
            self.shapes.push((0, 0));
            self.diff.push(false);
        }
        let i = self.used;
        self.used += 1;
        // Reuse: resize never shrinks capacity; stale values are overwritten by the op.
        self.vals[i].resize(len, T::ZERO);
        self.shapes[i] = (rows, cols);
        self.diff[i] = diff;
        Var(i)
    }

    fn store_ints(&mut self, v: &[u32]) -> usize {
        if self.ints_used == self.ints.len() {
            self.ints.push(Vec::new());
        }
        let i = self.ints_used;
        self.ints_used += 1;
        self.ints[i].clear();
        self.ints[i].extend_from_slice(v);
        i
    }

    /// The values of a var, row-major.
    pub fn value(&self, v: Var) -> &[T] {
        &self.vals[v.0]
    }

    /// (rows, cols) of a var.
    pub fn shape(&self, v: Var) -> (usize, usize) {
        self.shapes[v.0]
    }

    /// The gradient of the loss with respect to `v`, after [`Tape::backward`].
    pub fn grad(&self, v: Var) -> &[T] {
        &self.grads[v.0]
    }

    /// A leaf holding `data` as a (rows, cols) input whose gradient is wanted (gradient checks).
    /// Panics if `data.len() != rows * cols`.
    pub fn input(&mut self, data: &[T], rows: usize, cols: usize) -> Var {
        assert_eq!(data.len(), rows * cols, "input: data length vs shape");
        let v = self.alloc(rows, cols, true);
        self.vals[v.0].copy_from_slice(data);
        v
    }

    fn record(&mut self, node: Node) {
        if self.recording {
            self.nodes.push(node);
        }
    }

    /// Token + position embedding: tokens (B, T) → (B*T, C); wte (Vp, C), wpe (maxT, C), or no
    /// wpe for the token embedding alone (models with rotary positions, [`Tape::rope`]).
    pub fn embedding(
        &mut self,
        params: &[T],
        tokens: &[u32],
        wte: Param,
        wpe: Option<Param>,
        t: usize,
    ) -> Var {
        let c = wte.cols;
        let out = self.alloc(tokens.len(), c, true);
        ops::embedding::forward(
            &mut self.vals[out.0],
            tokens,
            &params[wte.range()],
            wpe.map(|p| &params[p.range()]),
            t,
            c,
        );
        let tokens = self.store_ints(tokens);
        self.record(Node::Embedding {
            out,
            tokens,
            wte,
            wpe,
            t,
        });
        out
    }

    /// LayerNorm of each row of x with weight w and bias b (both (1, C)).
    pub fn layernorm(&mut self, params: &[T], x: Var, w: Param, b: Param) -> Var {
        let (n, c) = self.shape(x);
        let out = self.alloc(n, c, true);
        let mean = self.alloc(n, 1, false);
        let rstd = self.alloc(n, 1, false);
        let [o, m, r, xv] = self
            .vals
            .get_disjoint_mut([out.0, mean.0, rstd.0, x.0])
            .expect("distinct vars");
        ops::layernorm::forward(o, m, r, xv, &params[w.range()], &params[b.range()], c);
        self.record(Node::LayerNorm {
            out,
            x,
            mean,
            rstd,
            w,
            b,
        });
        out
    }

    /// RMSNorm of each row of x (N, C) with weight w (1, C):
    /// `y = x / sqrt(mean(x²) + eps) · w` (Llama's; statistics in f64, see [`ops::rmsnorm`]).
    /// Panics if w does not have C elements.
    pub fn rmsnorm(&mut self, params: &[T], x: Var, w: Param, eps: f64) -> Var {
        let (n, c) = self.shape(x);
        assert_eq!(w.len(), c, "rmsnorm: weight vs input width");
        let out = self.alloc(n, c, true);
        let rstd = self.alloc(n, 1, false);
        let [o, r, xv] = self
            .vals
            .get_disjoint_mut([out.0, rstd.0, x.0])
            .expect("distinct vars");
        ops::rmsnorm::forward(o, r, xv, &params[w.range()], eps, c);
        self.record(Node::RmsNorm { out, x, rstd, w });
        out
    }

    /// Rotary position embedding of qkv (B*T, (NH + 2·KV)·HS), rows `[q heads | k heads |
    /// v heads]` (see [`ops::attention`]): every query and key head rotated by the angles
    /// `pos · inv_freq[i]` (HS = 2·`inv_freq.len()`, Hugging Face's "rotate half" pairing, see
    /// [`ops::rope`]), the values copied; row r at position `r % t`. A new var of qkv's shape.
    /// Panics if `inv_freq` or `t` is empty, or the width is not (NH + 2·KV)·HS.
    pub fn rope(
        &mut self,
        qkv: Var,
        t: usize,
        n_head: usize,
        n_kv_head: usize,
        inv_freq: &[f64],
    ) -> Var {
        let (n, width) = self.shape(qkv);
        let hs = 2 * inv_freq.len();
        assert!(hs > 0 && t > 0, "rope: empty head or sequence");
        assert_eq!(
            (n_head + 2 * n_kv_head) * hs,
            width,
            "rope: qkv width vs (NH + 2·KV)·HS"
        );
        let out = self.alloc(n, width, true);
        let cos = self.alloc(t, hs / 2, false);
        let sin = self.alloc(t, hs / 2, false);
        let [o, cv, sv, xv] = self
            .vals
            .get_disjoint_mut([out.0, cos.0, sin.0, qkv.0])
            .expect("distinct vars");
        ops::rope::table_into(cv, sv, inv_freq);
        let heads = n_head + n_kv_head;
        ops::rope::forward(o, xv, cv, sv, t, width, heads);
        self.record(Node::Rope {
            out,
            x: qkv,
            cos,
            sin,
            t,
            heads,
        });
        out
    }

    /// SwiGLU of x (N, 2F), rows `[gate | up]` → (N, F): `silu(gate) · up`. Panics if x's width
    /// is odd.
    pub fn swiglu(&mut self, x: Var) -> Var {
        let (n, f2) = self.shape(x);
        assert_eq!(f2 % 2, 0, "swiglu: odd input width");
        let out = self.alloc(n, f2 / 2, true);
        let [o, xv] = self
            .vals
            .get_disjoint_mut([out.0, x.0])
            .expect("distinct vars");
        ops::swiglu::forward(o, xv, f2 / 2);
        self.record(Node::Swiglu { out, x });
        out
    }

    /// `x · W + bias` with W stored (IC, OC), or `x · Wᵀ` with W stored (OC, IC) when
    /// `transposed` (the tied LM head). x (N, IC) → (N, OC); bias (1, OC). Panics, naming the
    /// shapes, if W's IC is not x's width or the bias does not have OC values.
    pub fn linear(
        &mut self,
        params: &[T],
        x: Var,
        w: Param,
        bias: Option<Param>,
        transposed: bool,
    ) -> Var {
        let (n, ic) = self.shape(x);
        let (oc, w_ic) = if transposed {
            (w.rows, w.cols)
        } else {
            (w.cols, w.rows)
        };
        assert!(
            w_ic == ic,
            "linear: input ({n}, {ic}) needs a weight {} with IC = {ic}, got ({}, {})",
            if transposed { "(OC, IC)" } else { "(IC, OC)" },
            w.rows,
            w.cols
        );
        if let Some(b) = bias {
            assert!(
                b.len() == oc,
                "linear: weight ({}, {}) has OC = {oc} outputs, the bias has {} values",
                w.rows,
                w.cols,
                b.len()
            );
        }
        let out = self.alloc(n, oc, true);
        let [o, xv] = self
            .vals
            .get_disjoint_mut([out.0, x.0])
            .expect("distinct vars");
        let bias_v = bias.map(|b| &params[b.range()]);
        ops::linear::forward(
            self.level,
            o,
            xv,
            &params[w.range()],
            bias_v,
            n,
            ic,
            oc,
            transposed,
        )
        .expect("linear: shapes are consistent by construction");
        self.record(Node::Linear {
            out,
            x,
            w,
            bias,
            transposed,
        });
        out
    }

    /// Causal self-attention of qkv (B*T, 3C) with `nh` heads → (B*T, C). Attention dropout with
    /// probability `p` when recording and `p > 0`. [`Tape::attention_gqa`] with KV = NH.
    pub fn attention(&mut self, qkv: Var, b: usize, nh: usize, p: f64, rng: &mut impl Rng) -> Var {
        self.attention_gqa(qkv, b, nh, nh, p, rng)
    }

    /// Causal grouped-query self-attention of qkv (B*T, (NH + 2·KV)·HS), rows `[q heads | k heads
    /// | v heads]`, with NH = `n_head` query heads sharing KV = `n_kv_head` key/value heads
    /// (query head h reads key/value head h / (NH/KV); KV must divide NH) → (B*T, NH·HS).
    /// Attention dropout with probability `p` when recording and `p > 0`. Panics if `b` is 0 or
    /// does not divide the rows, KV does not divide NH, or the width is not (NH + 2·KV)·HS.
    pub fn attention_gqa(
        &mut self,
        qkv: Var,
        b: usize,
        n_head: usize,
        n_kv_head: usize,
        p: f64,
        rng: &mut impl Rng,
    ) -> Var {
        let (n, width) = self.shape(qkv);
        assert!(
            b > 0 && n.is_multiple_of(b),
            "attention: {n} rows do not split into b = {b} sequences of equal length"
        );
        let (nh, kv) = (n_head, n_kv_head);
        assert!(
            kv > 0 && nh.is_multiple_of(kv),
            "attention: {nh} query heads are not a multiple of {kv} key/value heads"
        );
        let hs = width / (nh + 2 * kv);
        assert_eq!(
            hs * (nh + 2 * kv),
            width,
            "attention: qkv width vs (NH + 2·KV)·HS"
        );
        let dims = Dims {
            b,
            t: n / b,
            c: nh * hs,
            nh,
            kv,
        };
        let out = self.alloc(n, dims.c, true);
        let att = self.alloc(b * nh * dims.t, dims.t, false);
        let mask = (self.recording && p > 0.0).then(|| {
            let m = self.alloc(b * nh * dims.t, dims.t, false);
            ops::dropout::draw_mask(&mut self.vals[m.0], p, rng);
            m
        });
        match mask {
            Some(m) => {
                let [o, a, q, mv] = self
                    .vals
                    .get_disjoint_mut([out.0, att.0, qkv.0, m.0])
                    .expect("distinct vars");
                ops::attention::forward(self.level, o, a, q, Some(mv), dims)
                    .expect("attention: shapes are consistent by construction");
            }
            None => {
                let [o, a, q] = self
                    .vals
                    .get_disjoint_mut([out.0, att.0, qkv.0])
                    .expect("distinct vars");
                ops::attention::forward(self.level, o, a, q, None, dims)
                    .expect("attention: shapes are consistent by construction");
            }
        }
        self.record(Node::Attention {
            out,
            qkv,
            att,
            mask,
            dims,
        });
        out
    }

    /// GELU (tanh approximation), elementwise.
    pub fn gelu(&mut self, x: Var) -> Var {
        let (r, c) = self.shape(x);
        let out = self.alloc(r, c, true);
        let th = self.alloc(r, c, false);
        let [o, t, xv] = self
            .vals
            .get_disjoint_mut([out.0, th.0, x.0])
            .expect("distinct vars");
        ops::gelu::forward(o, t, xv);
        self.record(Node::Gelu { out, x, th });
        out
    }

    /// a + b, elementwise (the residual connection). Panics if the shapes differ.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let (r, c) = self.shape(a);
        assert_eq!(self.shape(b), (r, c), "add: shapes differ");
        let out = self.alloc(r, c, true);
        let [o, av, bv] = self
            .vals
            .get_disjoint_mut([out.0, a.0, b.0])
            .expect("distinct vars");
        ops::residual::forward(o, av, bv);
        self.record(Node::Add { out, a, b });
        out
    }

    /// Dropout with probability p; the identity (no op recorded) when not recording or p = 0.
    pub fn dropout(&mut self, x: Var, p: f64, rng: &mut impl Rng) -> Var {
        if !self.recording || p <= 0.0 {
            return x;
        }
        let (r, c) = self.shape(x);
        let out = self.alloc(r, c, true);
        let mask = self.alloc(r, c, false);
        ops::dropout::draw_mask(&mut self.vals[mask.0], p, rng);
        let [o, xv, m] = self
            .vals
            .get_disjoint_mut([out.0, x.0, mask.0])
            .expect("distinct vars");
        ops::dropout::forward(o, xv, m);
        self.record(Node::Dropout { out, x, mask });
        out
    }

    /// The last of every `t` rows of x (B*T, C) → (B, C), for sampling. Forward only: panics
    /// when recording (no backward is defined).
    pub fn last_rows(&mut self, x: Var, t: usize) -> Var {
        assert!(!self.recording, "last_rows is a forward-only op");
        let (n, c) = self.shape(x);
        let out = self.alloc(n / t, c, false);
        let [o, xv] = self
            .vals
            .get_disjoint_mut([out.0, x.0])
            .expect("distinct vars");
        for (o, x) in o.chunks_exact_mut(c).zip(xv.chunks_exact(t * c)) {
            o.copy_from_slice(&x[(t - 1) * c..]);
        }
        out
    }

    /// Mean cross-entropy of softmax(logits[:, ..v]) against targets; the loss the tape's
    /// [`Tape::backward`] differentiates. logits (N, Vp) with Vp >= v; targets (N), each < v.
    /// Panics if there is not one target per row.
    pub fn softmax_cross_entropy(&mut self, logits: Var, targets: &[u32], v: usize) -> T {
        let (n, _) = self.shape(logits);
        assert_eq!(
            targets.len(),
            n,
            "softmax_cross_entropy: one target per row"
        );
        let probs = self.alloc(n, v, false);
        let vp = self.shape(logits).1;
        let [p, l] = self
            .vals
            .get_disjoint_mut([probs.0, logits.0])
            .expect("distinct vars");
        let loss = ops::softmax_ce::forward(p, l, targets, v, vp);
        let targets = self.store_ints(targets);
        self.record(Node::SoftmaxCe {
            loss_of: logits,
            probs,
            targets,
            v,
        });
        self.loss = Some((logits, loss));
        loss
    }

    /// Backpropagates the loss of the last [`Tape::softmax_cross_entropy`] (d loss = 1):
    /// parameter gradients accumulate into `dparams` (same layout as `params`). Panics if no loss
    /// was recorded since the last [`Tape::reset`].
    pub fn backward(&mut self, params: &[T], dparams: &mut [T]) {
        self.backward_scaled(params, dparams, T::ONE, Write::Add);
    }

    /// Like [`Tape::backward`], for the loss multiplied by `scale` (d loss = scale): a shard's
    /// share of a batch, or a micro-batch's share of an accumulated step. `into`: `Add`
    /// accumulates into `dparams`; `Set` overwrites all of it (its old values are never read,
    /// parameters the loss does not reach get 0).
    pub fn backward_scaled(&mut self, params: &[T], dparams: &mut [T], scale: T, into: Write) {
        assert!(self.loss.is_some(), "backward: no loss recorded");
        self.prepare_grads();
        self.loss_scale = scale;
        self.params_written = (into == Write::Set).then(Vec::new);
        self.norm_sq = None;
        self.run_backward(params, dparams);
    }

    /// [`Tape::backward_scaled`] overwriting `dparams` (`Write::Set`), returning Σ g² over all
    /// of `dparams` (in f64), the square of the gradient norm a clip needs: each parameter's
    /// gradient is summed right after the last op that writes it, while it is still in cache,
    /// instead of in a pass over the whole buffer afterwards. Parameters no op reached (and the
    /// gaps between parameters) are 0 and add nothing. The order of summation differs from a
    /// pass over the buffer (per parameter, in backward order): equal to rounding.
    pub fn backward_with_norm(&mut self, params: &[T], dparams: &mut [T], scale: T) -> f64 {
        assert!(self.loss.is_some(), "backward: no loss recorded");
        self.prepare_grads();
        self.loss_scale = scale;
        self.params_written = Some(Vec::new());
        self.norm_sq = Some(0.0);
        self.run_backward(params, dparams);
        self.norm_sq.take().expect("set above")
    }

    /// Backpropagates a given gradient `dout` of var `out` (for gradient checks of single ops):
    /// the nodes recorded after the ops that produced `out` contribute nothing.
    pub fn backward_from(&mut self, out: Var, dout: &[T], params: &[T], dparams: &mut [T]) {
        self.prepare_grads();
        self.params_written = None;
        self.norm_sq = None;
        self.grads[out.0].copy_from_slice(dout);
        self.written[out.0] = true;
        self.loss = None;
        self.run_backward(params, dparams);
    }

    /// Sizes the gradient buffers (zero-filled only when a shape changed: stale values are
    /// overwritten before they are read) and marks every gradient unwritten.
    fn prepare_grads(&mut self) {
        self.written.clear();
        self.written.resize(self.used, false);
        for i in 0..self.used {
            let len = if self.diff[i] { self.vals[i].len() } else { 0 };
            let g = &mut self.grads[i];
            if g.len() != len {
                g.clear();
                g.resize(len, T::ZERO);
            }
        }
    }

    fn run_backward(&mut self, params: &[T], dparams: &mut [T]) {
        let level = self.level;
        let nodes = std::mem::take(&mut self.nodes);
        // With a norm to sum: the node after which each parameter's gradient is final (the
        // last to write it in backward order: the lowest index), by offset.
        let mut last_writer = std::collections::HashMap::new();
        if self.norm_sq.is_some() {
            for (i, node) in nodes.iter().enumerate().rev() {
                for p in node.params().into_iter().flatten() {
                    last_writer.insert(p.offset, i);
                }
            }
        }
        for (i, node) in nodes.iter().enumerate().rev() {
            'node: {
                let vals = &self.vals;
                let grads = &mut self.grads;
                let written = &mut self.written;
                if let Some(out) = node.output() {
                    if !written[out.0] {
                        break 'node; // no gradient reached this node's output
                    }
                }
                // How this node writes input `v`'s gradient; marks it written.
                let mut write = |v: Var| {
                    let w = if written[v.0] { Write::Add } else { Write::Set };
                    written[v.0] = true;
                    w
                };
                // How this node writes parameter `p`'s gradient: `Set` for the first write of an
                // overwriting pass (then recorded), else `Add`.
                let params_written = &mut self.params_written;
                let mut pwrite = |p: Param| match params_written {
                    Some(done) if !done.contains(&(p.offset, p.len())) => {
                        done.push((p.offset, p.len()));
                        Write::Set
                    }
                    _ => Write::Add,
                };
                match *node {
                    Node::SoftmaxCe {
                        loss_of,
                        probs,
                        targets,
                        v,
                    } => {
                        if self.loss.is_some() {
                            let vp = self.shapes[loss_of.0].1;
                            let w = write(loss_of);
                            ops::softmax_ce::backward(
                                &mut grads[loss_of.0],
                                &vals[probs.0],
                                &self.ints[targets],
                                self.loss_scale,
                                v,
                                vp,
                                w,
                            );
                        }
                    }
                    Node::Embedding {
                        out,
                        tokens,
                        wte,
                        wpe,
                        t,
                    } => {
                        let we = pwrite(wte);
                        let (dwte, dwpe) = match wpe {
                            Some(wpe) => {
                                let wp = pwrite(wpe);
                                let (dwte, dwpe) = two_params(dparams, wte, wpe);
                                wp.clear_for_adds(dwpe);
                                (dwte, Some(dwpe))
                            }
                            None => (&mut dparams[wte.range()], None),
                        };
                        // The scatter adds: a first write starts from zero.
                        we.clear_for_adds(dwte);
                        ops::embedding::backward(
                            dwte,
                            dwpe,
                            &grads[out.0],
                            &self.ints[tokens],
                            t,
                            wte.cols,
                        );
                    }
                    Node::LayerNorm {
                        out,
                        x,
                        mean,
                        rstd,
                        w,
                        b,
                    } => {
                        let [dx, dout] =
                            grads.get_disjoint_mut([x.0, out.0]).expect("distinct vars");
                        let (ww, wb) = (pwrite(w), pwrite(b));
                        let (dw, db) = two_params(dparams, w, b);
                        // The row reduction adds: a first write starts from zero.
                        ww.clear_for_adds(dw);
                        wb.clear_for_adds(db);
                        let c = w.len();
                        ops::layernorm::backward(
                            write(x),
                            dx,
                            dw,
                            db,
                            dout,
                            &vals[x.0],
                            &params[w.range()],
                            &vals[mean.0],
                            &vals[rstd.0],
                            c,
                        );
                    }
                    Node::RmsNorm { out, x, rstd, w } => {
                        let [dx, dout] =
                            grads.get_disjoint_mut([x.0, out.0]).expect("distinct vars");
                        let dw = &mut dparams[w.range()];
                        // The row reduction adds: a first write starts from zero.
                        pwrite(w).clear_for_adds(dw);
                        ops::rmsnorm::backward(
                            write(x),
                            dx,
                            dw,
                            dout,
                            &vals[x.0],
                            &params[w.range()],
                            &vals[rstd.0],
                            w.len(),
                        );
                    }
                    Node::Rope {
                        out,
                        x,
                        cos,
                        sin,
                        t,
                        heads,
                    } => {
                        let [dx, dout] =
                            grads.get_disjoint_mut([x.0, out.0]).expect("distinct vars");
                        let width = self.shapes[x.0].1;
                        ops::rope::backward(
                            write(x),
                            dx,
                            dout,
                            &vals[cos.0],
                            &vals[sin.0],
                            t,
                            width,
                            heads,
                        );
                    }
                    Node::Swiglu { out, x } => {
                        let [dx, dout] =
                            grads.get_disjoint_mut([x.0, out.0]).expect("distinct vars");
                        let f = self.shapes[out.0].1;
                        ops::swiglu::backward(write(x), dx, &vals[x.0], dout, f);
                    }
                    Node::Linear {
                        out,
                        x,
                        w,
                        bias,
                        transposed,
                    } => {
                        let [dx, dout] =
                            grads.get_disjoint_mut([x.0, out.0]).expect("distinct vars");
                        let (n, ic) = self.shapes[x.0];
                        let oc = self.shapes[out.0].1;
                        // The weight and its bias are written together: both first, or neither.
                        let ww = pwrite(w);
                        if let Some(b) = bias {
                            assert_eq!(pwrite(b), ww, "a bias shared without its weight");
                        }
                        let (dw, db) = match bias {
                            Some(b) => {
                                let (dw, db) = two_params(dparams, w, b);
                                (dw, Some(db))
                            }
                            None => (&mut dparams[w.range()], None),
                        };
                        ops::linear::backward(
                            level,
                            write(x),
                            dx,
                            ww,
                            dw,
                            db,
                            dout,
                            &vals[x.0],
                            &params[w.range()],
                            n,
                            ic,
                            oc,
                            transposed,
                        )
                        .expect("linear: shapes are consistent by construction");
                    }
                    Node::Attention {
                        out,
                        qkv,
                        att,
                        mask,
                        dims,
                    } => {
                        let [dqkv, dout] = grads
                            .get_disjoint_mut([qkv.0, out.0])
                            .expect("distinct vars");
                        let m = mask.map(|m| &vals[m.0][..]);
                        ops::attention::backward(
                            level,
                            write(qkv),
                            dqkv,
                            dout,
                            &vals[qkv.0],
                            &vals[att.0],
                            m,
                            dims,
                        )
                        .expect("attention: shapes are consistent by construction");
                    }
                    Node::Gelu { out, x, th } => {
                        let [dx, dout] =
                            grads.get_disjoint_mut([x.0, out.0]).expect("distinct vars");
                        ops::gelu::backward(write(x), dx, &vals[x.0], &vals[th.0], dout);
                    }
                    Node::Add { out, a, b } => {
                        let [da, db, dout] = grads
                            .get_disjoint_mut([a.0, b.0, out.0])
                            .expect("distinct vars");
                        let (wa, wb) = (write(a), write(b));
                        ops::residual::backward(wa, da, wb, db, dout);
                    }
                    Node::Dropout { out, x, mask } => {
                        let [dx, dout] =
                            grads.get_disjoint_mut([x.0, out.0]).expect("distinct vars");
                        ops::dropout::backward(write(x), dx, dout, &vals[mask.0]);
                    }
                }
            }
            // Σ g² of the parameters this node was the last to write (an unwritten one is
            // zeroed below and adds nothing).
            if let (Some(sq), Some(done)) = (self.norm_sq.as_mut(), &self.params_written) {
                for p in node.params().into_iter().flatten() {
                    if last_writer.get(&p.offset) == Some(&i) && done.contains(&(p.offset, p.len()))
                    {
                        *sq += sum_squares(&dparams[p.range()]);
                    }
                }
            }
        }
        self.nodes = nodes;
        // Gradients nothing wrote are zero (a leaf the loss does not depend on).
        for (g, &w) in self.grads.iter_mut().zip(&self.written) {
            if !w {
                g.fill(T::ZERO);
            }
        }
        // Overwriting: the parameters no op reached (and gaps between parameters) are zero.
        if let Some(mut done) = self.params_written.take() {
            done.sort_unstable();
            let mut at = 0;
            for (offset, len) in done {
                dparams[at.min(offset)..offset].fill(T::ZERO);
                at = at.max(offset + len);
            }
            let end = dparams.len();
            dparams[at.min(end)..].fill(T::ZERO);
        }
    }
}

/// Σ x² in f64, in parallel chunks, each compiled for the widest vectors.
fn sum_squares<T: Float>(x: &[T]) -> f64 {
    use rayon::prelude::*;
    x.par_chunks(1 << 14)
        .map(|c| {
            crate::wide::run(
                #[inline(always)]
                || crate::reduce::sum_squares_f64(c),
            )
        })
        .sum()
}

/// Two disjoint parameter gradients out of the flat buffer.
fn two_params<T>(d: &mut [T], a: Param, b: Param) -> (&mut [T], &mut [T]) {
    assert!(
        a.offset + a.len() <= b.offset || b.offset + b.len() <= a.offset,
        "parameters overlap"
    );
    if a.offset < b.offset {
        let (lo, hi) = d.split_at_mut(b.offset);
        (&mut lo[a.range()], &mut hi[..b.len()])
    } else {
        let (lo, hi) = d.split_at_mut(a.offset);
        (&mut hi[..a.len()], &mut lo[b.range()])
    }
}
