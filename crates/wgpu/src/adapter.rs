//! Adapter discovery: every adapter wgpu can open on this machine, best first.
//!
//! The order (discrete GPU, integrated, virtual, CPU, other; then as the backend lists them) is
//! the order of `ferrogpt info` and of `wgpu:N`: `wgpu` alone means adapter 0, so a machine
//! with a GPU and lavapipe picks the GPU.

use ferrogpt_gemm::hw::fmt_bytes;
use serde::Serialize;
use std::fmt::Write as _;

/// The limits of an adapter that decide what the ladder's kernels may do.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterLimits {
    /// Threads (invocations) per workgroup, all dimensions together.
    pub max_compute_invocations_per_workgroup: u32,
    /// x, y, z.
    pub max_compute_workgroup_size: [u32; 3],
    /// Bytes of `var<workgroup>` memory per workgroup.
    pub max_compute_workgroup_storage_size: u32,
    /// Workgroups per dispatch along each of x, y, z.
    pub max_compute_workgroups_per_dimension: u32,
    /// Bytes one storage binding may cover: the largest A, B or C a kernel reads or writes.
    pub max_storage_buffer_binding_size: u64,
    /// Bytes of the largest buffer.
    pub max_buffer_size: u64,
}

/// One adapter: what it is, its limits and its features.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    /// Its place in [`adapters`], the N of `wgpu:N`.
    pub index: usize,
    /// The adapter's name: "NVIDIA GeForce RTX 4090", "llvmpipe (LLVM 19.1.7, 256 bits)".
    pub name: String,
    /// vulkan, metal, dx12.
    pub backend: String,
    /// DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu (lavapipe is one) or Other.
    pub device_type: String,
    /// The driver's name, empty where the backend does not say.
    pub driver: String,
    /// The driver's version or build, empty where the backend does not say.
    pub driver_info: String,
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel; 0 where the backend does not
    /// say).
    pub vendor: u32,
    /// PCI device id (0 where the backend does not say).
    pub device: u32,
    /// Smallest and largest subgroup (warp, wave, SIMD-group) size.
    pub subgroup_sizes: [u32; 2],
    /// The limits that bound the ladder's kernels and buffers.
    pub limits: AdapterLimits,
    /// Every optional feature, by its WebGPU/wgpu name (`shader-f16`, `timestamp-query`, ...).
    pub features: Vec<String>,
    /// Whether the f16 rung can run (`shader-f16`).
    pub shader_f16: bool,
    /// Whether the benchmark can time with GPU timestamps (`timestamp-query`).
    pub timestamp_query: bool,
}

/// A wgpu instance with the backends this build has, or `None` where it has none for this
/// platform (wgpu would panic in `Instance::new`).
pub(crate) fn instance() -> Option<wgpu::Instance> {
    let backends = wgpu::Instance::enabled_backend_features();
    if backends.is_empty() {
        return None;
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    Some(wgpu::Instance::new(desc))
}

/// The adapters of `instance`, best first (see the module doc).
pub(crate) fn enumerate(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut list = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    // A stable sort keeps the backend's own order within a kind.
    list.sort_by_key(rank);
    list
}

/// Every adapter on this machine, best first; empty when there is none (or no backend in this
/// build), never an error.
pub fn adapters() -> Vec<AdapterReport> {
    let Some(instance) = instance() else {
        return Vec::new();
    };
    enumerate(&instance)
        .iter()
        .enumerate()
        .map(|(i, a)| report(i, a))
        .collect()
}

pub(crate) fn report(index: usize, adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    AdapterReport {
        index,
        name: info.name,
        backend: info.backend.to_str().to_string(),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        vendor: info.vendor,
        device: info.device,
        subgroup_sizes: [info.subgroup_min_size, info.subgroup_max_size],
        limits: AdapterLimits {
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size: [
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_workgroup_size_z,
            ],
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
        },
        features: features
            .iter()
            .map(|f| f.as_str().map_or_else(|| format!("{f:?}"), str::to_string))
            .collect(),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
    }
}

/// The text of `ferrogpt info`: per adapter a line for what it is, one for its limits and one
/// for its features; one line "no wgpu adapter" when the list is empty.
pub fn render_text(list: &[AdapterReport]) -> String {
    let mut s = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(s, "{label:<12} {value}");
    };
    if list.is_empty() {
        line("wgpu", "no wgpu adapter");
    }
    for a in list {
        let driver = match (a.driver.is_empty(), a.driver_info.is_empty()) {
            (false, false) => format!(", driver {} ({})", a.driver, a.driver_info),
            (false, true) => format!(", driver {}", a.driver),
            _ => String::new(),
        };
        line(
            &format!("wgpu {}", a.index),
            &format!("{}, {}, {}{driver}", a.name, a.backend, a.device_type),
        );
        let l = &a.limits;
        let [x, y, z] = l.max_compute_workgroup_size;
        line(
            "  limits",
            &format!(
                "{} invocations/workgroup ({x}×{y}×{z}), {} workgroup memory, {} per storage binding, {} per buffer, subgroups {}-{}",
                l.max_compute_invocations_per_workgroup,
                fmt_bytes(l.max_compute_workgroup_storage_size as u64),
                fmt_bytes(l.max_storage_buffer_binding_size),
                fmt_bytes(l.max_buffer_size),
                a.subgroup_sizes[0],
                a.subgroup_sizes[1],
            ),
        );
        let yes = |b: bool| if b { "yes" } else { "no" };
        line(
            "  features",
            &format!(
                "shader-f16 {}, timestamp-query {}; all: {}",
                yes(a.shader_f16),
                yes(a.timestamp_query),
                if a.features.is_empty() {
                    "none".to_string()
                } else {
                    a.features.join(" ")
                }
            ),
        );
    }
    s
}
