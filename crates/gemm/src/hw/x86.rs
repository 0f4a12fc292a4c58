//! x86_64: CPUID for the name and caches, runtime feature detection, and the FMA peak kernels.
//!
//! CPUID leaves used (Intel SDM vol. 2A, "CPUID"; AMD APM vol. 3, appendix E):
//! * 0: max leaf and vendor string (EBX, EDX, ECX); 1: family/model/stepping in EAX;
//! * 0x80000002-4: the 48-byte brand string;
//! * 4 (Intel) / 0x8000001D (AMD): one sub-leaf per cache: type EAX[4:0] (1 data, 3 unified),
//!   level EAX[7:5], size = ways (EBX[31:22]+1) × partitions (EBX[21:12]+1) × line
//!   (EBX[11:0]+1) × sets (ECX+1);
//! * 7.0: AMX-BF16 EDX[22], AMX-TILE EDX[24], AMX-INT8 EDX[25], which
//!   `is_x86_feature_detected!` knows only on nightly; AMX also needs the OS to enable the tile
//!   state in XCR0 (bits 17 and 18).

use super::peak::FmaKernel;
use super::{Caches, CpuName};
use std::arch::x86_64::*;
use std::hint::black_box;

/// One CPUID query.
#[allow(unused_unsafe)] // `__cpuid_count` became a safe fn in recent Rust; older ones need unsafe.
fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    // SAFETY: CPUID exists on every x86_64 CPU; a leaf above the maximum returns data, not a fault.
    unsafe { __cpuid_count(leaf, sub) }
}

fn max_leaf() -> u32 {
    cpuid(0, 0).eax
}

fn max_ext_leaf() -> u32 {
    cpuid(0x8000_0000, 0).eax
}

fn vendor_id() -> String {
    let r = cpuid(0, 0);
    let bytes: Vec<u8> = [r.ebx, r.edx, r.ecx]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

fn brand_string() -> Option<String> {
    if max_ext_leaf() < 0x8000_0004 {
        return None;
    }
    let bytes: Vec<u8> = (0x8000_0002..=0x8000_0004u32)
        .map(|leaf| cpuid(leaf, 0))
        .flat_map(|r| [r.eax, r.ebx, r.ecx, r.edx])
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let s = String::from_utf8_lossy(&bytes);
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    // Some CPUs pad with runs of spaces inside the string.
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (!s.is_empty()).then_some(s)
}

/// Display family, model and stepping from leaf 1 (with the extended fields folded in).
fn family_model_stepping() -> (u32, u32, u32) {
    let eax = cpuid(1, 0).eax;
    let base_family = (eax >> 8) & 0xf;
    let base_model = (eax >> 4) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        base_model | (((eax >> 16) & 0xf) << 4)
    } else {
        base_model
    };
    (family, model, eax & 0xf)
}

pub(super) fn cpu_name() -> CpuName {
    let raw = vendor_id();
    let vendor = match raw.as_str() {
        "GenuineIntel" => "Intel".to_string(),
        "AuthenticAMD" => "AMD".to_string(),
        "" => "unknown".to_string(),
        _ => raw,
    };
    let (family, model, stepping) = family_model_stepping();
    let ids = format!("family {family:#x}, model {model:#x}, stepping {stepping}");
    let core = super::identify::x86_core(&vendor, family, model, stepping);
    let server = super::identify::amd_server(&vendor, family, model);
    let microarch = Some(match (core, server) {
        (Some(core), Some(server)) => format!("{core}, {server} ({ids})"),
        (Some(core), None) => format!("{core} ({ids})"),
        (None, _) => ids,
    });
    CpuName {
        vendor,
        model: brand_string().unwrap_or_else(|| "unknown".to_string()),
        microarch,
    }
}

/// Caches from the deterministic cache parameters leaf (4 on Intel, 0x8000001D on AMD).
pub(super) fn caches() -> Caches {
    let leaf = match vendor_id().as_str() {
        "GenuineIntel" if max_leaf() >= 4 => 4,
        // Leaf 0x8000001D exists when TOPOEXT (0x80000001 ECX[22]) is set.
        "AuthenticAMD"
            if max_ext_leaf() >= 0x8000_001d && cpuid(0x8000_0001, 0).ecx & (1 << 22) != 0 =>
        {
            0x8000_001d
        }
        _ => return Caches::default(),
    };
    let mut c = Caches::default();
    for sub in 0..16 {
        let r = cpuid(leaf, sub);
        let kind = r.eax & 0x1f;
        if kind == 0 {
            break; // no more caches
        }
        let level = (r.eax >> 5) & 0x7;
        let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
        let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
        let line = (r.ebx & 0xfff) as usize + 1;
        let sets = r.ecx as usize + 1;
        let size = Some(ways * partitions * line * sets);
        match (level, kind) {
            (1, 1) => c.l1d = size,
            (2, 1 | 3) => c.l2 = size,
            (3, 1 | 3) => c.l3 = size,
            _ => {} // instruction caches, L4
        }
    }
    c
}

/// AMX state: (tile, bf16, int8), each true only when the CPU has it and the OS enabled the
/// tile state in XCR0. (Linux additionally wants a per-process arch_prctl before the first tile
/// instruction; the `amx` level does that.)
fn amx() -> (bool, bool, bool) {
    if max_leaf() < 7 {
        return (false, false, false);
    }
    let osxsave = cpuid(1, 0).ecx & (1 << 27) != 0;
    if !osxsave {
        return (false, false, false);
    }
    // SAFETY: OSXSAVE (CPUID.1:ECX[27]) says the OS has enabled XGETBV, so reading XCR0 cannot
    // fault.
    let xcr0 = unsafe { xgetbv0() };
    let tile_state = xcr0 & (0b11 << 17) == (0b11 << 17);
    let edx = cpuid(7, 0).edx;
    let bit = |b: u32| tile_state && edx & (1 << b) != 0;
    (bit(24), bit(22), bit(25))
}

/// # Safety
/// The caller must have checked CPUID.1:ECX[27] (OSXSAVE).
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    _xgetbv(0)
}

/// Everything [`features`] may report, in report order.
pub(super) const FEATURES: &[&str] = &[
    "sse",
    "sse2",
    "sse3",
    "ssse3",
    "sse4.1",
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
    "avx512fp16",
    "amx-tile",
    "amx-bf16",
    "amx-int8",
];

pub(super) fn features() -> Vec<&'static str> {
    let (amx_tile, amx_bf16, amx_int8) = amx();
    let present = [
        is_x86_feature_detected!("sse"),
        is_x86_feature_detected!("sse2"),
        is_x86_feature_detected!("sse3"),
        is_x86_feature_detected!("ssse3"),
        is_x86_feature_detected!("sse4.1"),
        is_x86_feature_detected!("sse4.2"),
        is_x86_feature_detected!("avx"),
        is_x86_feature_detected!("avx2"),
        is_x86_feature_detected!("fma"),
        is_x86_feature_detected!("avx512f"),
        is_x86_feature_detected!("avx512bw"),
        is_x86_feature_detected!("avx512vl"),
        is_x86_feature_detected!("avx512vnni"),
        is_x86_feature_detected!("avx512bf16"),
        is_x86_feature_detected!("avx512fp16"),
        amx_tile,
        amx_bf16,
        amx_int8,
    ];
    FEATURES
        .iter()
        .zip(present)
        .filter_map(|(&name, p)| p.then_some(name))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// FMA peak kernels.
//
// Each runs `iters` iterations of CHAINS independent vector FMAs `acc = acc*a + b` and returns a
// checksum. An FMA has a latency of 4 cycles and two issue ports on current Intel and AMD cores,
// so at least 8 independent chains are needed to keep both ports busy; we use 16 zmm registers
// (of 32) for AVX-512 and 12 ymm (of 16) for AVX2. With a = 0.999 and b = 0.001 the accumulators
// converge to 1.0: no overflow, no denormals.

/// The widest FMA kernels this CPU runs: (f32, f64).
pub(super) fn fma_kernels() -> (FmaKernel, FmaKernel) {
    if is_x86_feature_detected!("avx512f") {
        (
            FmaKernel {
                isa: "avx512f",
                flops_per_iter: (16 * 16 * 2) as f64,
                run: f32_avx512,
            },
            FmaKernel {
                isa: "avx512f",
                flops_per_iter: (16 * 8 * 2) as f64,
                run: f64_avx512,
            },
        )
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        (
            FmaKernel {
                isa: "avx2+fma",
                flops_per_iter: (12 * 8 * 2) as f64,
                run: f32_avx2,
            },
            FmaKernel {
                isa: "avx2+fma",
                flops_per_iter: (12 * 4 * 2) as f64,
                run: f64_avx2,
            },
        )
    } else {
        super::peak::portable_kernels()
    }
}

fn f32_avx512(iters: u64) -> f64 {
    assert!(is_x86_feature_detected!("avx512f"));
    // SAFETY: avx512f is present (checked above).
    unsafe { fma_f32_avx512(iters) }
}

fn f64_avx512(iters: u64) -> f64 {
    assert!(is_x86_feature_detected!("avx512f"));
    // SAFETY: avx512f is present (checked above).
    unsafe { fma_f64_avx512(iters) }
}

fn f32_avx2(iters: u64) -> f64 {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
    // SAFETY: avx2 and fma are present (checked above).
    unsafe { fma_f32_avx2(iters) }
}

fn f64_avx2(iters: u64) -> f64 {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
    // SAFETY: avx2 and fma are present (checked above).
    unsafe { fma_f64_avx2(iters) }
}

/// One kernel body: `$chains` accumulators of type `$v`, `$fma(acc, a, b)` per iteration, then
/// the lanes summed as f64 through `$store` into an array of `$lanes` `$e`.
macro_rules! fma_loop {
    ($iters:expr, $chains:literal, $e:ty, $lanes:literal, $set1:ident, $fma:ident, $storeu:ident) => {{
        let a = $set1(black_box(0.999 as $e));
        let b = $set1(black_box(0.001 as $e));
        let mut acc = [$set1(black_box(0.5 as $e)); $chains];
        for _ in 0..$iters {
            for x in acc.iter_mut() {
                *x = $fma(*x, a, b);
            }
        }
        let mut sum = 0.0f64;
        for x in acc {
            let mut lanes = [0.0 as $e; $lanes];
            // SAFETY: `lanes` holds exactly one vector's worth of elements; unaligned store.
            unsafe { $storeu(lanes.as_mut_ptr(), x) };
            sum += lanes.iter().map(|&l| l as f64).sum::<f64>();
        }
        sum
    }};
}

#[target_feature(enable = "avx512f")]
unsafe fn fma_f32_avx512(iters: u64) -> f64 {
    fma_loop!(
        iters,
        16,
        f32,
        16,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    )
}

#[target_feature(enable = "avx512f")]
unsafe fn fma_f64_avx512(iters: u64) -> f64 {
    fma_loop!(
        iters,
        16,
        f64,
        8,
        _mm512_set1_pd,
        _mm512_fmadd_pd,
        _mm512_storeu_pd
    )
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fma_f32_avx2(iters: u64) -> f64 {
    fma_loop!(
        iters,
        12,
        f32,
        8,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    )
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fma_f64_avx2(iters: u64) -> f64 {
    fma_loop!(
        iters,
        12,
        f64,
        4,
        _mm256_set1_pd,
        _mm256_fmadd_pd,
        _mm256_storeu_pd
    )
}
