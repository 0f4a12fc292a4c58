//! The training state on the GPU (f32 gradients, optimizer moments, the weight-decay mask)
//! and what works on it between micro-batches: zeroing, the gradients' all-reduce, the
//! global norm, the fused optimizer step (which also writes the floatX weight copy), and
//! the host copies for checkpoints.

use ferrogpt_cuda::CudaError;

use super::launch::{self, AdamW};
use super::GpuModel;
use crate::raw::{Buf, Dev};

/// Blocks of `sumsq_partial` (fixed, so the norm is deterministic).
const NORM_BLOCKS: usize = 1024;

/// Which optimizer the state is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptKind {
    /// AdamW: moments m and v, bias correction, weight decay decoupled from the gradient
    /// (`p -= lr·wd·p`).
    AdamW,
    /// SGD with momentum (PyTorch's: `b = mu·b + g`, no dampening; `mu = 0` is plain SGD)
    /// and L2 weight decay added to the gradient (`g += wd·p`).
    Sgd,
}

/// Hyper-parameters of one optimizer update.
#[derive(Clone, Copy, Debug)]
///
/// Each optimizer reads its own fields: AdamW `lr`, `beta1`, `beta2`, `eps`, `weight_decay`;
/// SGD `lr`, `momentum`, `weight_decay`. Computed in f64 on the host, applied in f32.
pub struct Update {
    /// Learning rate of this step (after the schedule).
    pub lr: f64,
    /// AdamW's decay rate of the first moment.
    pub beta1: f64,
    /// AdamW's decay rate of the second moment.
    pub beta2: f64,
    /// AdamW's term added to sqrt(v̂) in the denominator.
    pub eps: f64,
    /// Weight decay, for the parameters whose decay flag is set (see [`OptState::decay`]).
    pub weight_decay: f64,
    /// SGD's momentum (0: none).
    pub momentum: f64,
}

/// The optimizer state of a run, to start or resume from (host copies).
///
/// Every vector is in the parameter layout (`ParamLayout` order, one value per parameter);
/// [`GpuModel::new`] refuses other lengths. A fresh run passes zeros and `t = 0`.
pub struct OptState {
    /// The optimizer the moments belong to.
    pub kind: OptKind,
    /// AdamW's first moment, or SGD's momentum buffer.
    pub m: Vec<f32>,
    /// AdamW's second moment. Empty for SGD.
    pub v: Vec<f32>,
    /// Updates taken so far: the next is update t + 1, the step AdamW's bias correction uses.
    pub t: u64,
    /// Weight decay applies to parameter i (same layout as the parameters).
    pub decay: Vec<bool>,
}

/// Gradients and optimizer state (training only); P parameters.
pub(super) struct TrainState {
    pub grads: Buf<f32>, // (P)
    m: Buf<f32>,         // (P)
    v: Buf<f32>,         // (P), AdamW only
    decay: Buf<u32>,     // (P/32) bits: weight decay applies
    scal: Buf<f32>,      // (NORM_BLOCKS + 8) scratch for reductions
    kind: OptKind,
    t: u64,
}

impl TrainState {
    /// Bytes of optimizer state (moments and the decay mask).
    pub fn state_bytes(&self) -> usize {
        self.m.ptr().bytes() + self.v.ptr().bytes() + self.decay.ptr().bytes()
    }

    /// Uploads `o` for `n` parameters, with zeroed gradients. Errors: wrong lengths.
    pub fn new(dev: &Dev, n: usize, o: OptState) -> Result<TrainState, CudaError> {
        if o.m.len() != n || (o.kind == OptKind::AdamW && o.v.len() != n) || o.decay.len() != n {
            return Err(CudaError::Input(format!(
                "optimizer state of {}/{} values for {n} parameters",
                o.m.len(),
                o.v.len()
            )));
        }
        let grads = Buf::new(dev, n)?;
        let m = Buf::new(dev, n)?;
        dev.htod(m.ptr(), &o.m)?;
        let v = Buf::new(dev, if o.kind == OptKind::AdamW { n } else { 0 })?;
        if o.kind == OptKind::AdamW {
            dev.htod(v.ptr(), &o.v)?;
        }
        let mut bits = vec![0u32; n.div_ceil(32)];
        for (i, d) in o.decay.iter().enumerate() {
            if *d {
                bits[i / 32] |= 1 << (i % 32);
            }
        }
        let decay = Buf::new(dev, bits.len())?;
        dev.htod(decay.ptr(), &bits)?;
        let scal = Buf::new(dev, NORM_BLOCKS + 8)?;
        Ok(TrainState {
            grads,
            m,
            v,
            decay,
            scal,
            kind: o.kind,
            t: o.t,
        })
    }
}

impl GpuModel {
    /// The training state; an error for a model opened for inference.
    pub(super) fn train_state(&self) -> Result<&TrainState, CudaError> {
        self.train
            .as_ref()
            .ok_or_else(|| CudaError::Input("inference only".into()))
    }

    /// Sets the gradients to zero.
    pub fn zero_grads(&self) -> Result<(), CudaError> {
        self.dev.zero(self.train_state()?.grads.ptr())
    }

    /// Sums the gradients across the ranks of `nccl`, in place, on the model's stream.
    pub fn all_reduce_grads(&self, nccl: &crate::nccl::Nccl) -> Result<(), CudaError> {
        let g = self.train_state()?.grads.ptr();
        // SAFETY: the gradient buffer holds layout.total f32 on this GPU for as long as the
        // model lives; the stream orders the sum after the backward passes and before the
        // norm and the update.
        unsafe {
            nccl.all_reduce_sum(
                g.addr(),
                g.len(),
                cudarc::nccl::sys::ncclDataType_t::ncclFloat32,
                self.dev.cu_stream(),
            )
        }
    }

    /// The global L2 norm of the gradients (deterministic two-stage sum).
    pub fn grad_norm(&self) -> Result<f64, CudaError> {
        let t = self.train_state()?;
        let (d, out) = (&self.dev, self.out.ptr().slice(0, 1));
        let n = self.layout.total;
        launch::sumsq_partial(d, t.scal.ptr(), t.grads.ptr(), n, NORM_BLOCKS)?;
        launch::sum_final(d, out, t.scal.ptr(), NORM_BLOCKS)?;
        let mut s = [0f32];
        d.dtoh(&mut s, out)?;
        Ok((s[0] as f64).sqrt())
    }

    /// One optimizer update with the gradients multiplied by `gscale` (clipping folded in).
    pub fn update(&mut self, u: &Update, gscale: f32) -> Result<(), CudaError> {
        let px = self.params_x.as_ref().map(|b| b.ptr());
        let (p, n) = (self.params.ptr(), self.layout.total);
        let d = &self.dev;
        let t = self
            .train
            .as_mut()
            .ok_or_else(|| CudaError::Input("inference only".into()))?;
        t.t += 1;
        let (g, m, decay) = (t.grads.ptr(), t.m.ptr(), t.decay.ptr());
        match t.kind {
            OptKind::AdamW => {
                let bc1 = 1.0 - u.beta1.powi(t.t as i32);
                let bc2 = 1.0 - u.beta2.powi(t.t as i32);
                let h = AdamW {
                    b1: u.beta1 as f32,
                    b2: u.beta2 as f32,
                    step_size: (u.lr / bc1) as f32,
                    bc2_sqrt: bc2.sqrt() as f32,
                    eps: u.eps as f32,
                    wd: (u.lr * u.weight_decay) as f32,
                    gscale,
                };
                launch::adamw(d, p, px, g, m, t.v.ptr(), decay, n, &h)
            }
            OptKind::Sgd => {
                let (lr, mu, wd) = (u.lr as f32, u.momentum as f32, u.weight_decay as f32);
                launch::sgd(d, p, px, g, m, decay, n, lr, mu, wd, gscale)
            }
        }
    }

    /// Host copy of the optimizer state: (m, v, steps). v is empty for SGD.
    pub fn optimizer_state(&self) -> Result<(Vec<f32>, Vec<f32>, u64), CudaError> {
        let t = self.train_state()?;
        let n = self.layout.total;
        let mut m = vec![0f32; n];
        self.dev.dtoh(&mut m, t.m.ptr())?;
        let mut v = Vec::new();
        if t.kind == OptKind::AdamW {
            v = vec![0f32; n];
            self.dev.dtoh(&mut v, t.v.ptr())?;
        }
        Ok((m, v, t.t))
    }
}
