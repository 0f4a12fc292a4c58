//! Naming a CPU from what a machine prints about it: `/proc/cpuinfo`, `lscpu` or macOS's
//! `sysctl` output, recorded on one machine and read on any. Pure text parsing, compiled on
//! every target; the live detection of this folder uses the same tables ([`x86_core`],
//! [`apple_cores`], `midr.rs`), so what a recorded text is recognised as is what `ferrogpt
//! info` says on that machine.
//!
//! What each source gives:
//!
//! | source          | x86_64                                  | Arm                                   |
//! |-----------------|-----------------------------------------|---------------------------------------|
//! | `/proc/cpuinfo` | vendor_id, cpu family, model, stepping, model name, flags | CPU implementer, CPU part (the MIDR), Features |
//! | `lscpu`         | Vendor ID, CPU family, Model, Stepping, Model name, Flags | Vendor ID, Model name (the core: "Neoverse-V1"), Flags, BIOS Vendor ID (AWS) |
//! | `sysctl -a`     | machdep.cpu.vendor/family/model (Intel Macs) | machdep.cpu.brand_string, hw.optional.arm.FEAT_* |
//!
//! Identification numbers: Intel family 6 model numbers as Linux's `intel-family.h` names
//! them; AMD families 17h (Zen, Zen+, Zen 2), 19h (Zen 3, Zen 3+, Zen 4) and 1Ah (Zen 5) with
//! their model ranges from AMD's processor programming references; Arm MIDR parts as Linux's
//! `cputype.h` (`midr.rs`). A Neoverse N1/V1/V2 is named as the AWS Graviton 2/3/4 it is when
//! the text says the machine is AWS's (lscpu's "BIOS Vendor ID: AWS"), and as that Graviton's
//! core otherwise.

use super::midr;
use serde::Serialize;
use std::fmt;

/// What a recorded text says about its CPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuId {
    /// Which kind of text it was: "/proc/cpuinfo", "lscpu" or "sysctl".
    pub source: &'static str,
    /// "x86_64" or "aarch64".
    pub arch: &'static str,
    /// "Intel", "AMD", "Arm", "Apple", ...
    pub vendor: String,
    /// The model the text names ("Intel(R) Xeon(R) Platinum 8488C", "Apple M2 Pro"), or the
    /// name derived from the MIDR where the text has none.
    pub model: String,
    /// The core design: "Sapphire Rapids", "Zen 4", "Neoverse V1", "Avalanche + Blizzard".
    pub microarch: Option<String>,
    /// The recognised name, for people: "AWS Graviton 3 (Neoverse V1)", "AMD Zen 4 (Genoa)",
    /// "Intel Sapphire Rapids", "Apple M2 Pro".
    pub name: String,
    /// Logical CPUs the text lists, when it says.
    pub logical_cores: Option<usize>,
    /// ISA features in `ferrogpt info`'s names (x86: [`super::FEATURES`] of x86_64; Arm:
    /// neon, fp16, dotprod, bf16, i8mm, sve, sve2, sme).
    pub features: Vec<&'static str>,
}

/// Why a text could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentifyError {
    /// Not /proc/cpuinfo, lscpu or sysctl output.
    UnknownFormat,
    /// The format is known but the identifying fields are missing or unreadable.
    Missing {
        /// The format recognised: "/proc/cpuinfo", "lscpu" or "sysctl".
        source: &'static str,
        /// The field that is missing or unreadable.
        what: &'static str,
    },
}

impl fmt::Display for IdentifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentifyError::UnknownFormat => write!(
                f,
                "not /proc/cpuinfo, lscpu or sysctl output (no processor, Architecture or \
                 machdep.cpu lines)"
            ),
            IdentifyError::Missing { source, what } => {
                write!(f, "{source} output without {what}")
            }
        }
    }
}

impl std::error::Error for IdentifyError {}

/// Recognise the CPU that `text` (`/proc/cpuinfo`, `lscpu` or `sysctl -a` output) describes.
pub fn identify(text: &str) -> Result<CpuId, IdentifyError> {
    let has = |key: &str| field(text, key).is_some();
    if has("machdep.cpu.brand_string") || has("hw.ncpu") {
        sysctl(text)
    } else if has("Architecture") && (has("Model name") || has("Vendor ID")) {
        lscpu(text)
    } else if has("processor") {
        cpuinfo(text)
    } else {
        Err(IdentifyError::UnknownFormat)
    }
}

/// The value of the first `key: value` line whose key is `key` (spaces and tabs around either
/// side ignored).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn cpuinfo(text: &str) -> Result<CpuId, IdentifyError> {
    const SRC: &str = "/proc/cpuinfo";
    let logical = text
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    if let Some(vendor_id) = field(text, "vendor_id") {
        let missing = |what| IdentifyError::Missing { source: SRC, what };
        let family = field(text, "cpu family")
            .and_then(number)
            .ok_or(missing("cpu family"))?;
        let model = field(text, "model")
            .and_then(number)
            .ok_or(missing("model"))?;
        let stepping = field(text, "stepping").and_then(number).unwrap_or(0);
        let flags = field(text, "flags").unwrap_or("");
        return Ok(x86(
            SRC,
            vendor_id,
            family,
            model,
            stepping,
            field(text, "model name"),
            flags,
            Some(logical),
        ));
    }
    let (imp, part) = midr::from_cpuinfo(text).ok_or(IdentifyError::Missing {
        source: SRC,
        what: "vendor_id (x86) or CPU implementer and CPU part (Arm)",
    })?;
    Ok(arm(
        SRC,
        imp,
        part,
        false,
        field(text, "Features").unwrap_or(""),
        Some(logical),
    ))
}

fn lscpu(text: &str) -> Result<CpuId, IdentifyError> {
    const SRC: &str = "lscpu";
    let missing = |what| IdentifyError::Missing { source: SRC, what };
    let vendor = field(text, "Vendor ID").ok_or(missing("Vendor ID"))?;
    let logical = field(text, "CPU(s)").and_then(number).map(|n| n as usize);
    let flags = field(text, "Flags").unwrap_or("");
    if vendor == "GenuineIntel" || vendor == "AuthenticAMD" {
        let family = field(text, "CPU family")
            .and_then(number)
            .ok_or(missing("CPU family"))?;
        let model = field(text, "Model")
            .and_then(number)
            .ok_or(missing("Model"))?;
        let stepping = field(text, "Stepping").and_then(number).unwrap_or(0);
        return Ok(x86(
            SRC,
            vendor,
            family,
            model,
            stepping,
            field(text, "Model name"),
            flags,
            logical,
        ));
    }
    // Arm: lscpu prints the implementer's name and the core's name (util-linux's tables), not
    // the MIDR numbers; map both back.
    let imp = match vendor {
        "ARM" => 0x41,
        "Apple" => 0x61,
        "Ampere" => 0xc0,
        "Fujitsu" => 0x46,
        "NVIDIA" => 0x4e,
        "Qualcomm" => 0x51,
        "Microsoft" => 0x6d,
        _ => return Err(missing("a known Vendor ID")),
    };
    let core = field(text, "Model name").ok_or(missing("Model name"))?;
    let wanted = core.replace('-', " ").to_ascii_lowercase();
    let part = (0..0x1000u16)
        .find(|&p| midr::core(imp, p).is_some_and(|c| c.to_ascii_lowercase() == wanted))
        .ok_or(missing("a known core in Model name"))?;
    let on_aws = ["BIOS Vendor ID", "BIOS Model name"]
        .iter()
        .filter_map(|k| field(text, k))
        .any(|v| v.contains("AWS") || v.contains("Amazon"));
    Ok(arm(SRC, imp, part, on_aws, flags, logical))
}

fn sysctl(text: &str) -> Result<CpuId, IdentifyError> {
    const SRC: &str = "sysctl";
    let brand = field(text, "machdep.cpu.brand_string").ok_or(IdentifyError::Missing {
        source: SRC,
        what: "machdep.cpu.brand_string",
    })?;
    let logical = field(text, "hw.logicalcpu")
        .or_else(|| field(text, "hw.ncpu"))
        .and_then(number)
        .map(|n| n as usize);
    if let (Some(v), Some(f), Some(m)) = (
        field(text, "machdep.cpu.vendor"),
        field(text, "machdep.cpu.family").and_then(number),
        field(text, "machdep.cpu.model").and_then(number),
    ) {
        // An Intel Mac: CPUID's numbers, and its feature words in upper case.
        let flags = ["machdep.cpu.features", "machdep.cpu.leaf7_features"]
            .iter()
            .filter_map(|k| field(text, k))
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase()
            .replace("avx1.0", "avx")
            .replace("sse4.1", "sse4_1")
            .replace("sse4.2", "sse4_2")
            .replace("sse3", "pni");
        let stepping = field(text, "machdep.cpu.stepping")
            .and_then(number)
            .unwrap_or(0);
        return Ok(x86(SRC, v, f, m, stepping, Some(brand), &flags, logical));
    }
    let on = |k: &str| field(text, k).is_some_and(|v| v == "1");
    let mut features = vec![];
    for (name, keys) in [
        ("neon", &["hw.optional.AdvSIMD", "hw.optional.neon"][..]),
        (
            "fp16",
            &["hw.optional.arm.FEAT_FP16", "hw.optional.neon_fp16"],
        ),
        ("dotprod", &["hw.optional.arm.FEAT_DotProd"]),
        ("bf16", &["hw.optional.arm.FEAT_BF16"]),
        ("i8mm", &["hw.optional.arm.FEAT_I8MM"]),
        ("sme", &["hw.optional.arm.FEAT_SME"]),
    ] {
        if keys.iter().any(|k| on(k)) {
            features.push(name);
        }
    }
    let cores = apple_cores(brand);
    let apple = brand.starts_with("Apple");
    Ok(CpuId {
        source: SRC,
        arch: "aarch64",
        vendor: if apple { "Apple" } else { "unknown" }.into(),
        model: brand.to_string(),
        microarch: cores.map(String::from),
        name: brand.to_string(),
        logical_cores: logical,
        features,
    })
}

/// The performance and efficiency cores of an Apple M-series chip, from its brand string
/// ("Apple M2 Pro" → "Avalanche + Blizzard"); `None` for a chip Apple has not given core names
/// for, or not an M-series.
pub fn apple_cores(brand: &str) -> Option<&'static str> {
    let generation = brand
        .strip_prefix("Apple M")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    Some(match generation {
        "1" => "Firestorm + Icestorm",
        "2" => "Avalanche + Blizzard",
        "3" => "Everest + Sawtooth",
        _ => return None,
    })
}

#[allow(clippy::too_many_arguments)]
fn x86(
    source: &'static str,
    vendor_id: &str,
    family: u32,
    model: u32,
    stepping: u32,
    brand: Option<&str>,
    flags: &str,
    logical_cores: Option<usize>,
) -> CpuId {
    let vendor = match vendor_id {
        "GenuineIntel" => "Intel",
        "AuthenticAMD" => "AMD",
        other => other,
    }
    .to_string();
    let core = x86_core(&vendor, family, model, stepping);
    let server = amd_server(&vendor, family, model);
    let name = match (core, server) {
        (Some(c), Some(s)) => format!("{vendor} {c} ({s})"),
        (Some(c), None) => format!("{vendor} {c}"),
        (None, _) => format!("{vendor} family {family:#x} model {model:#x}"),
    };
    let brand = brand.map(|b| b.split_whitespace().collect::<Vec<_>>().join(" "));
    CpuId {
        source,
        arch: "x86_64",
        vendor,
        model: brand.unwrap_or_else(|| "unknown".into()),
        microarch: core.map(String::from),
        name,
        logical_cores,
        features: x86_features(flags),
    }
}

fn arm(
    source: &'static str,
    imp: u8,
    part: u16,
    on_aws: bool,
    flags: &str,
    logical_cores: Option<usize>,
) -> CpuId {
    let model = midr::model(imp, part, on_aws);
    CpuId {
        source,
        arch: "aarch64",
        vendor: midr::vendor(imp),
        name: model.clone(),
        model,
        microarch: midr::core(imp, part).map(String::from),
        logical_cores,
        features: arm_features(flags),
    }
}

/// The core of an x86 CPU from CPUID's display family, model and stepping; `None` when the
/// table does not know it.
pub fn x86_core(vendor: &str, family: u32, model: u32, stepping: u32) -> Option<&'static str> {
    Some(match (vendor, family, model) {
        ("Intel", 6, 0x3c | 0x45 | 0x46) => "Haswell",
        ("Intel", 6, 0x3f) => "Haswell-EP",
        ("Intel", 6, 0x3d | 0x47) => "Broadwell",
        ("Intel", 6, 0x4f | 0x56) => "Broadwell-EP",
        ("Intel", 6, 0x4e | 0x5e) => "Skylake",
        // One model number, three generations of Xeon: the stepping tells them apart.
        ("Intel", 6, 0x55) => match stepping {
            0..=4 => "Skylake-SP",
            5..=7 => "Cascade Lake",
            _ => "Cooper Lake",
        },
        ("Intel", 6, 0x8e | 0x9e) => "Kaby Lake / Coffee Lake",
        ("Intel", 6, 0xa5 | 0xa6) => "Comet Lake",
        ("Intel", 6, 0xa7) => "Rocket Lake",
        ("Intel", 6, 0x7d | 0x7e) => "Ice Lake (client)",
        ("Intel", 6, 0x6a | 0x6c) => "Ice Lake-SP",
        ("Intel", 6, 0x8c | 0x8d) => "Tiger Lake",
        ("Intel", 6, 0x97 | 0x9a) => "Alder Lake",
        ("Intel", 6, 0xb7 | 0xba | 0xbf) => "Raptor Lake",
        ("Intel", 6, 0xaa | 0xac) => "Meteor Lake",
        ("Intel", 6, 0xc5 | 0xc6) => "Arrow Lake",
        ("Intel", 6, 0xbd) => "Lunar Lake",
        ("Intel", 6, 0x8f) => "Sapphire Rapids",
        ("Intel", 6, 0xcf) => "Emerald Rapids",
        ("Intel", 6, 0xad | 0xae) => "Granite Rapids",
        ("Intel", 6, 0xaf) => "Sierra Forest",
        ("AMD", 0x17, 0x08 | 0x18) => "Zen+",
        ("AMD", 0x17, 0x00..=0x2f) => "Zen",
        ("AMD", 0x17, _) => "Zen 2",
        ("AMD", 0x19, 0x10..=0x1f | 0x60..=0x7f | 0xa0..=0xaf) => "Zen 4",
        ("AMD", 0x19, 0x40..=0x4f) => "Zen 3+",
        ("AMD", 0x19, _) => "Zen 3",
        ("AMD", 0x1a, _) => "Zen 5",
        _ => return None,
    })
}

/// The EPYC generation's code name, for the server models of each family.
pub(super) fn amd_server(vendor: &str, family: u32, model: u32) -> Option<&'static str> {
    Some(match (vendor, family, model) {
        ("AMD", 0x17, 0x01) => "Naples",
        ("AMD", 0x17, 0x31) => "Rome",
        ("AMD", 0x19, 0x01) => "Milan",
        ("AMD", 0x19, 0x11) => "Genoa",
        ("AMD", 0x19, 0xa0..=0xaf) => "Bergamo",
        ("AMD", 0x1a, 0x00..=0x0f) => "Turin",
        ("AMD", 0x1a, 0x10..=0x1f) => "Turin Dense",
        _ => return None,
    })
}

/// Linux's x86 flag names → ours, in [`super::FEATURES`]' x86 order.
fn x86_features(flags: &str) -> Vec<&'static str> {
    const MAP: &[(&str, &str)] = &[
        ("sse", "sse"),
        ("sse2", "sse2"),
        ("pni", "sse3"),
        ("ssse3", "ssse3"),
        ("sse4_1", "sse4.1"),
        ("sse4_2", "sse4.2"),
        ("avx", "avx"),
        ("avx2", "avx2"),
        ("fma", "fma"),
        ("avx512f", "avx512f"),
        ("avx512bw", "avx512bw"),
        ("avx512vl", "avx512vl"),
        ("avx512_vnni", "avx512vnni"),
        ("avx512_bf16", "avx512bf16"),
        ("avx512_fp16", "avx512fp16"),
        ("amx_tile", "amx-tile"),
        ("amx_bf16", "amx-bf16"),
        ("amx_int8", "amx-int8"),
    ];
    let have: Vec<&str> = flags.split_whitespace().collect();
    MAP.iter()
        .filter(|(linux, _)| have.contains(linux))
        .map(|(_, ours)| *ours)
        .collect()
}

/// Linux's arm64 hwcap names → ours.
fn arm_features(flags: &str) -> Vec<&'static str> {
    const MAP: &[(&str, &str)] = &[
        ("asimd", "neon"),
        ("asimdhp", "fp16"),
        ("asimddp", "dotprod"),
        ("bf16", "bf16"),
        ("i8mm", "i8mm"),
        ("sve", "sve"),
        ("sve2", "sve2"),
        ("sme", "sme"),
    ];
    let have: Vec<&str> = flags.split_whitespace().collect();
    MAP.iter()
        .filter(|(linux, _)| have.contains(linux))
        .map(|(_, ours)| *ours)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xeon_steppings_and_zen_ranges() {
        assert_eq!(x86_core("Intel", 6, 0x55, 4), Some("Skylake-SP"));
        assert_eq!(x86_core("Intel", 6, 0x55, 7), Some("Cascade Lake"));
        assert_eq!(x86_core("Intel", 6, 0x55, 11), Some("Cooper Lake"));
        assert_eq!(x86_core("AMD", 0x17, 0x31, 0), Some("Zen 2"));
        assert_eq!(x86_core("AMD", 0x17, 0x01, 2), Some("Zen"));
        assert_eq!(x86_core("AMD", 0x19, 0x44, 1), Some("Zen 3+"));
        assert_eq!(x86_core("AMD", 0x19, 0x61, 2), Some("Zen 4"));
        assert_eq!(x86_core("Intel", 6, 0x01, 0), None);
    }

    #[test]
    fn unknown_and_incomplete_texts() {
        assert_eq!(identify("hello\nworld"), Err(IdentifyError::UnknownFormat));
        let e = identify("processor\t: 0\nBogoMIPS\t: 50.00\n").unwrap_err();
        assert!(e.to_string().contains("CPU implementer"), "{e}");
        let e = identify("processor : 0\nvendor_id : GenuineIntel\n").unwrap_err();
        assert_eq!(e.to_string(), "/proc/cpuinfo output without cpu family");
        assert_eq!(apple_cores("Apple M2 Max"), Some("Avalanche + Blizzard"));
        assert_eq!(apple_cores("Apple M4 Pro"), None);
        assert_eq!(apple_cores("Intel(R) Core(TM) i9"), None);
    }
}
