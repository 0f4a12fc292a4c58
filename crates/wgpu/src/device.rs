//! One wgpu device and its queue: buffers up and down, the pipelines of the ladder, and
//! [`Gpu::matmul`], the one entry point of the contract in the crate doc.
//!
//! wgpu reports most errors (a shader naga or the driver refuses, a buffer too large, a bad
//! binding) to a per-device handler instead of returning them; its default handler panics. Each
//! [`Gpu`] installs one that records them, and every entry point turns what was recorded during
//! its calls into a [`WgpuError::Gpu`].

use crate::adapter::{self, AdapterReport};
use crate::ladder::{Input, Level};
use crate::WgpuError;
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

/// A buffer on the device: `len` elements of type `input`, in an allocation padded to a whole
/// number of vec4s (the vectorised kernels read A and B as `array<vec4<E>>`).
pub struct GpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    len: usize,
    input: Input,
}

impl GpuBuffer {
    /// Elements (not counting the padding).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The element type.
    pub fn input(&self) -> Input {
        self.input
    }
}

/// Which clock [`Gpu::time_matmul`] used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamps written at the start and the end of each compute pass.
    Timestamps,
    /// The host's clock around a submission and the wait for it (includes the submission's
    /// overhead, tens of microseconds).
    Wall,
}

impl Clock {
    /// "gpu timestamps" or "wall clock", as the benchmark's output names the clock.
    pub fn name(self) -> &'static str {
        match self {
            Clock::Timestamps => "gpu timestamps",
            Clock::Wall => "wall clock",
        }
    }
}

/// One adapter opened as a device, with its queue and the ladder's pipelines (compiled on first
/// use, kept for the life of the `Gpu`).
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    report: AdapterReport,
    pipelines: Mutex<HashMap<Level, wgpu::ComputePipeline>>,
    /// Errors wgpu reported to this device's handler since the last [`Gpu::check`].
    errors: Arc<Mutex<Vec<String>>>,
}

/// Buffers are allocated in whole blocks of this many elements (two vec4s of f16, one 16-byte
/// line of f32 × 2), never empty.
const PAD: usize = 8;

impl Gpu {
    /// Opens adapter `index` of [`crate::adapters`] (0: the best one). Asks for the adapter's
    /// own limits (so that large products fit) and for `shader-f16` and `timestamp-query`
    /// where it has them. Errors: [`WgpuError::NoAdapter`] without any adapter,
    /// [`WgpuError::NoSuchAdapter`] for an index past the list, [`WgpuError::RequestDevice`]
    /// when the adapter refuses.
    pub fn new(index: usize) -> Result<Gpu, WgpuError> {
        let instance = adapter::instance().ok_or(WgpuError::NoAdapter)?;
        let list = adapter::enumerate(&instance);
        if list.is_empty() {
            return Err(WgpuError::NoAdapter);
        }
        let count = list.len();
        let chosen = list
            .get(index)
            .ok_or(WgpuError::NoSuchAdapter { index, count })?;
        let report = adapter::report(index, chosen);
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        let desc = wgpu::DeviceDescriptor {
            label: Some("ferrogpt"),
            required_features: chosen.features() & wanted,
            required_limits: chosen.limits(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(chosen.request_device(&desc)).map_err(|e| {
            WgpuError::RequestDevice {
                adapter: report.name.clone(),
                message: e.to_string(),
            }
        })?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        Ok(Gpu {
            device,
            queue,
            report,
            pipelines: Mutex::new(HashMap::new()),
            errors,
        })
    }

    /// What the adapter is: name, backend, limits, features.
    pub fn info(&self) -> &AdapterReport {
        &self.report
    }

    /// "name (backend, device type)", for table headers.
    pub fn name(&self) -> String {
        format!(
            "{} ({}, {})",
            self.report.name, self.report.backend, self.report.device_type
        )
    }

    /// The most elements of type `input` one buffer may hold on this device (the smaller of
    /// its buffer and storage-binding limits, less the padding of [`GpuBuffer`]).
    pub fn max_elements(&self, input: Input) -> usize {
        let limits = self.device.limits();
        let bytes = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        let elems = (bytes / input.size()) as usize;
        elems - elems % PAD
    }

    /// The clock [`Gpu::time_matmul`] uses on this device.
    pub fn clock(&self) -> Clock {
        if self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            Clock::Timestamps
        } else {
            Clock::Wall
        }
    }

    /// Whether this device can run `level` (f16 needs `shader-f16`), and why not.
    pub fn supports(&self, level: Level) -> Result<(), WgpuError> {
        if level.input() == Input::F16
            && !self.device.features().contains(wgpu::Features::SHADER_F16)
        {
            return Err(WgpuError::Unsupported {
                level: level.name(),
                feature: "shader-f16",
                adapter: self.report.name.clone(),
            });
        }
        Ok(())
    }

    /// The wgpu device (for the model's kernels in this crate).
    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The device's queue.
    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Turns the errors wgpu reported since the last check into one error.
    pub(crate) fn check(&self, during: &str) -> Result<(), WgpuError> {
        let mut errors = self.errors.lock().map_err(|_| WgpuError::Gpu {
            during: during.to_string(),
            message: "the error log's lock was poisoned".into(),
        })?;
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(WgpuError::Gpu {
            during: during.to_string(),
            message,
        })
    }

    /// Waits until the queue has finished everything submitted so far.
    pub fn synchronize(&self) -> Result<(), WgpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| WgpuError::Gpu {
                during: "waiting for the queue".into(),
                message: e.to_string(),
            })?;
        self.check("waiting for the queue")
    }

    /// An uninitialised-looking but zeroed buffer of `len` elements (wgpu zeroes new buffers).
    fn alloc(
        &self,
        len: usize,
        input: Input,
        usage: wgpu::BufferUsages,
        what: &str,
    ) -> Result<wgpu::Buffer, WgpuError> {
        let elems = len.div_ceil(PAD).max(1) * PAD;
        let bytes = elems as u64 * input.size();
        let limits = self.device.limits();
        let limit = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        if bytes > limit {
            return Err(WgpuError::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage,
            mapped_at_creation: false,
        });
        self.check(&format!("allocating {what}"))?;
        Ok(buffer)
    }

    /// Copies `data` to a new f32 buffer on the device.
    pub fn upload(&self, data: &[f32]) -> Result<GpuBuffer, WgpuError> {
        self.upload_as(Input::F32, data)
    }

    /// Copies `data` to a new buffer on the device as `input`: f32 as it is, f16 rounded to
    /// nearest even (values past f16's range become infinite).
    pub fn upload_as(&self, input: Input, data: &[f32]) -> Result<GpuBuffer, WgpuError> {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let buffer = self.alloc(data.len(), input, usage, "an uploaded buffer")?;
        let mut bytes: Vec<u8> = match input {
            Input::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Input::F16 => data
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
        };
        bytes.resize(buffer.size() as usize, 0);
        self.queue.write_buffer(&buffer, 0, &bytes);
        self.check("uploading a buffer")?;
        Ok(GpuBuffer {
            buffer,
            len: data.len(),
            input,
        })
    }

    /// A new f32 buffer of `len` zeros.
    pub fn zeros(&self, len: usize) -> Result<GpuBuffer, WgpuError> {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        Ok(GpuBuffer {
            buffer: self.alloc(len, Input::F32, usage, "a zeroed buffer")?,
            len,
            input: Input::F32,
        })
    }

    /// Copies `src` into `dst` on the device (same element type and length).
    pub fn copy(&self, src: &GpuBuffer, dst: &mut GpuBuffer) -> Result<(), WgpuError> {
        if src.input != dst.input || src.len != dst.len {
            return Err(WgpuError::Shape(format!(
                "copy: {} {:?} elements into {} {:?}",
                src.len, src.input, dst.len, dst.input
            )));
        }
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, src.buffer.size());
        self.queue.submit([enc.finish()]);
        self.check("copying a buffer")
    }

    /// Reads a buffer back to the host as f32 (f16 buffers widened), waiting for the queue.
    pub fn download(&self, src: &GpuBuffer) -> Result<Vec<f32>, WgpuError> {
        let bytes = self.read_bytes(&src.buffer)?;
        let size = src.input.size() as usize;
        let used = &bytes[..src.len * size];
        Ok(match src.input {
            Input::F32 => used
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Input::F16 => used
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }

    /// The whole of a COPY_SRC buffer, through a mapped staging buffer.
    fn read_bytes(&self, buffer: &wgpu::Buffer) -> Result<Vec<u8>, WgpuError> {
        let during = "reading a buffer back";
        let size = buffer.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.synchronize()?;
        let gpu_err = |message: String| WgpuError::Gpu {
            during: during.into(),
            message,
        };
        rx.recv()
            .map_err(|e| gpu_err(e.to_string()))?
            .map_err(|e| gpu_err(e.to_string()))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| gpu_err(e.to_string()))?
            .to_vec();
        staging.unmap();
        self.check(during)?;
        Ok(bytes)
    }

    /// The compiled pipeline of `level`, compiling it on first use.
    fn pipeline(&self, level: Level) -> Result<wgpu::ComputePipeline, WgpuError> {
        if let Some(p) = self
            .pipelines
            .lock()
            .ok()
            .and_then(|m| m.get(&level).cloned())
        {
            return Ok(p);
        }
        self.supports(level)?;
        let spec = level.kernel();
        let source = format!("{}{}", spec.header, spec.src);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(spec.file),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(level.name()),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        self.check(&format!("compiling {} ({})", spec.file, level.name()))?;
        if let Ok(mut m) = self.pipelines.lock() {
            m.insert(level, pipeline.clone());
        }
        Ok(pipeline)
    }

    /// Compiles every level this device supports (so that a benchmark times no compilation).
    pub fn compile_all(&self) -> Result<(), WgpuError> {
        for level in Level::ALL {
            if self.supports(level).is_ok() {
                self.pipeline(level)?;
            }
        }
        Ok(())
    }

    /// Checks the arguments of [`Gpu::matmul`] against the contract and this device.
    #[allow(clippy::too_many_arguments)]
    fn validate(
        &self,
        level: Level,
        m: usize,
        n: usize,
        k: usize,
        a: &GpuBuffer,
        b: &GpuBuffer,
        c: &GpuBuffer,
    ) -> Result<(u32, u32), WgpuError> {
        self.supports(level)?;
        if m == 0 || n == 0 || k == 0 {
            return Err(WgpuError::Shape(format!(
                "m, n and k must be at least 1 (got {m}×{n}×{k})"
            )));
        }
        for (name, len, want) in [
            ("A", a.len, m * k),
            ("B", b.len, k * n),
            ("C", c.len, m * n),
        ] {
            if want > u32::MAX as usize {
                return Err(WgpuError::Shape(format!(
                    "{name} would have {want} elements; the kernels index with 32 bits"
                )));
            }
            if len != want {
                return Err(WgpuError::Shape(format!(
                    "{name} has {len} elements, {m}×{n}×{k} needs {want}"
                )));
            }
        }
        let want = level.input();
        if a.input != want || b.input != want {
            return Err(WgpuError::Shape(format!(
                "{} reads A and B as {want:?}; got {:?} and {:?} (upload them with upload_as)",
                level.name(),
                a.input,
                b.input
            )));
        }
        if c.input != Input::F32 {
            return Err(WgpuError::Shape("C must be an f32 buffer".into()));
        }
        let spec = level.kernel();
        let (rows, cols) = (
            m.div_ceil(spec.tile.0 as usize),
            n.div_ceil(spec.tile.1 as usize),
        );
        let (x, y) = if spec.x_is_row {
            (rows, cols)
        } else {
            (cols, rows)
        };
        let max = self.device.limits().max_compute_workgroups_per_dimension as usize;
        if x > max || y > max {
            return Err(WgpuError::Shape(format!(
                "{m}×{n} needs {x}×{y} workgroups of {}; this adapter dispatches at most {max} per dimension",
                level.name()
            )));
        }
        Ok((x as u32, y as u32))
    }

    /// Records one product into `enc`, with timestamps at the start and end of its pass when
    /// `stamps` gives a query set and the first of two indices.
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        level: Level,
        dims: &wgpu::Buffer,
        groups: (u32, u32),
        a: &GpuBuffer,
        b: &GpuBuffer,
        c: &GpuBuffer,
        stamps: Option<(&wgpu::QuerySet, u32)>,
    ) -> Result<(), WgpuError> {
        let pipeline = self.pipeline(level)?;
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(level.name()),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: a.buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: b.buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: c.buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: dims.as_entire_binding(),
                },
            ],
        });
        let timestamp_writes = stamps.map(|(query_set, i)| wgpu::ComputePassTimestampWrites {
            query_set,
            beginning_of_pass_write_index: Some(i),
            end_of_pass_write_index: Some(i + 1),
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(level.name()),
            timestamp_writes,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
        Ok(())
    }

    /// The uniform buffer of the kernels' `Dims { m, n, k, pad }`.
    fn dims(&self, m: usize, n: usize, k: usize) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dims"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let words = [m as u32, n as u32, k as u32, 0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.queue.write_buffer(&buffer, 0, &bytes);
        buffer
    }

    /// C (m×n) = A (m×k) · B (k×n) at `level`, C overwritten (the contract in the crate doc).
    /// A and B must be of the level's [`Input`] type (see [`Gpu::upload_as`]), C f32, and each
    /// exactly m·k, k·n, m·n long. The product is submitted, not waited for: a download or
    /// [`Gpu::synchronize`] waits. Errors: [`WgpuError::Shape`] for arguments outside the
    /// contract, [`WgpuError::Unsupported`] for f16 without `shader-f16`, [`WgpuError::Gpu`]
    /// when wgpu refuses (a kernel that does not compile here, a lost device).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        level: Level,
        m: usize,
        n: usize,
        k: usize,
        a: &GpuBuffer,
        b: &GpuBuffer,
        c: &mut GpuBuffer,
    ) -> Result<(), WgpuError> {
        let groups = self.validate(level, m, n, k, a, b, c)?;
        let dims = self.dims(m, n, k);
        let mut enc = self.device.create_command_encoder(&Default::default());
        self.encode(&mut enc, level, &dims, groups, a, b, c, None)?;
        self.queue.submit([enc.finish()]);
        self.check(&format!("running {}", level.name()))
    }

    /// [`Gpu::matmul`] from host slices: uploads A and B as the level reads them (f16 rounded
    /// to nearest even for [`Level::F16`]), runs the product and returns C.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_host(
        &self,
        level: Level,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
    ) -> Result<Vec<f32>, WgpuError> {
        if a.len() != m * k || b.len() != k * n {
            return Err(WgpuError::Shape(format!(
                "A has {} elements and B {}; {m}×{n}×{k} needs {} and {}",
                a.len(),
                b.len(),
                m * k,
                k * n
            )));
        }
        self.supports(level)?;
        let (da, db) = (
            self.upload_as(level.input(), a)?,
            self.upload_as(level.input(), b)?,
        );
        let mut c = self.zeros(m * n)?;
        self.matmul(level, m, n, k, &da, &db, &mut c)?;
        self.download(&c)
    }

    /// Runs the product `reps` times and returns each run's seconds, by [`Gpu::clock`]: with
    /// GPU timestamps, all runs go in one submission, one compute pass each, timed from the
    /// start to the end of its pass; with the wall clock, each run is one submission and a
    /// wait. Same arguments and errors as [`Gpu::matmul`].
    #[allow(clippy::too_many_arguments)]
    pub fn time_matmul(
        &self,
        level: Level,
        m: usize,
        n: usize,
        k: usize,
        a: &GpuBuffer,
        b: &GpuBuffer,
        c: &mut GpuBuffer,
        reps: usize,
    ) -> Result<Vec<f64>, WgpuError> {
        let groups = self.validate(level, m, n, k, a, b, c)?;
        let dims = self.dims(m, n, k);
        let during = format!("timing {}", level.name());
        let reps = reps.max(1);
        if self.clock() == Clock::Wall {
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps {
                let mut enc = self.device.create_command_encoder(&Default::default());
                self.encode(&mut enc, level, &dims, groups, a, b, c, None)?;
                let cmd = enc.finish();
                let start = Instant::now();
                self.queue.submit([cmd]);
                self.synchronize()?;
                times.push(start.elapsed().as_secs_f64());
            }
            self.check(&during)?;
            return Ok(times);
        }
        // wgpu allows at most 4096 queries per set.
        let reps = reps.min(2048);
        let count = 2 * reps as u32;
        let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("matmul timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved timestamps"),
            size: 8 * count as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        for r in 0..reps as u32 {
            self.encode(
                &mut enc,
                level,
                &dims,
                groups,
                a,
                b,
                c,
                Some((&queries, 2 * r)),
            )?;
        }
        enc.resolve_query_set(&queries, 0..count, &resolved, 0);
        self.queue.submit([enc.finish()]);
        self.check(&during)?;
        let bytes = self.read_bytes(&resolved)?;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
            .collect();
        let period_ns = self.queue.get_timestamp_period() as f64;
        Ok(ticks
            .chunks_exact(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * period_ns * 1e-9)
            .collect())
    }
}
