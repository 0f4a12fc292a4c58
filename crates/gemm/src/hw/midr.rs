//! Naming ARM CPUs from their Main ID Register (MIDR_EL1).
//!
//! MIDR layout: implementer [31:24], variant [23:20], architecture [19:16], part [15:4],
//! revision [3:0]. Implementer and part codes follow Linux's `arch/arm64/include/asm/cputype.h`.
//! Pure decoding, compiled on every target so its tests run on any build machine; only the
//! aarch64 module calls it.
#![cfg_attr(
    not(all(target_arch = "aarch64", target_os = "linux")),
    allow(dead_code)
)]

/// (implementer, part) from a raw MIDR_EL1 value.
pub(super) fn decode(midr: u64) -> (u8, u16) {
    (((midr >> 24) & 0xff) as u8, ((midr >> 4) & 0xfff) as u16)
}

/// (implementer, part) from `/proc/cpuinfo` text ("CPU implementer : 0x41", "CPU part : 0xd0c").
pub(super) fn from_cpuinfo(text: &str) -> Option<(u8, u16)> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let hex = |s: String| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let imp = hex(field("CPU implementer")?)?;
    let part = hex(field("CPU part")?)?;
    Some((u8::try_from(imp).ok()?, u16::try_from(part).ok()?))
}

/// The implementer's name, or its code.
pub(super) fn vendor(implementer: u8) -> String {
    match implementer {
        0x41 => "Arm",
        0x42 => "Broadcom",
        0x43 => "Cavium",
        0x46 => "Fujitsu",
        0x48 => "HiSilicon",
        0x4e => "NVIDIA",
        0x51 => "Qualcomm",
        0x61 => "Apple",
        0x6d => "Microsoft",
        0xc0 => "Ampere",
        _ => return format!("implementer {implementer:#04x}"),
    }
    .to_string()
}

/// The core's name, when known: "Neoverse V1", "M2 Avalanche (P-core)".
pub(super) fn core(implementer: u8, part: u16) -> Option<&'static str> {
    Some(match (implementer, part) {
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse N1",
        (0x41, 0xd40) => "Neoverse V1",
        (0x41, 0xd41) => "Cortex-A78",
        (0x41, 0xd44) => "Cortex-X1",
        (0x41, 0xd49) => "Neoverse N2",
        (0x41, 0xd4f) => "Neoverse V2",
        (0x41, 0xd84) => "Neoverse V3",
        (0x41, 0xd8e) => "Neoverse N3",
        (0x46, 0x001) => "A64FX",
        (0x61, 0x022) => "M1 Icestorm (E-core)",
        (0x61, 0x023) => "M1 Firestorm (P-core)",
        (0x61, 0x024) => "M1 Pro Icestorm (E-core)",
        (0x61, 0x025) => "M1 Pro Firestorm (P-core)",
        (0x61, 0x028) => "M1 Max Icestorm (E-core)",
        (0x61, 0x029) => "M1 Max Firestorm (P-core)",
        (0x61, 0x032) => "M2 Blizzard (E-core)",
        (0x61, 0x033) => "M2 Avalanche (P-core)",
        (0x61, 0x034) => "M2 Pro Blizzard (E-core)",
        (0x61, 0x035) => "M2 Pro Avalanche (P-core)",
        (0x61, 0x038) => "M2 Max Blizzard (E-core)",
        (0x61, 0x039) => "M2 Max Avalanche (P-core)",
        (0x6d, 0xd49) => "Azure Cobalt 100 (Neoverse N2)",
        (0xc0, 0xac3) => "AmpereOne",
        (0xc0, 0xac4) => "AmpereOne A",
        _ => return None,
    })
}

/// The model name: the product when the core identifies it (AWS Graviton, Apple M-series),
/// else the core, else the raw codes. `on_aws` is whether the DMI says this is an EC2 machine:
/// a Neoverse N1 is a Graviton 2 there but, say, an Ampere Altra elsewhere.
pub(super) fn model(implementer: u8, part: u16, on_aws: bool) -> String {
    let graviton = match (implementer, part) {
        (0x41, 0xd08) => Some(1),
        (0x41, 0xd0c) => Some(2),
        (0x41, 0xd40) => Some(3),
        (0x41, 0xd4f) => Some(4),
        _ => None,
    };
    match (core(implementer, part), graviton) {
        (Some(core), Some(g)) if on_aws => format!("AWS Graviton {g} ({core})"),
        (Some(core), Some(g)) => format!(
            "{} {core} (the core of AWS Graviton {g})",
            vendor(implementer)
        ),
        (Some(core), None) if implementer == 0x61 => format!("Apple {core}"),
        (Some(core), None) => format!("{} {core}", vendor(implementer)),
        (None, _) => format!("{} part {part:#05x}", vendor(implementer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_midr() {
        // A Graviton 2 (Neoverse N1 r3p1) midr_el1 file reads 0x00000000413fd0c1.
        assert_eq!(decode(0x0000_0000_413f_d0c1), (0x41, 0xd0c));
        assert_eq!(decode(0x611f_0330), (0x61, 0x033));
    }

    #[test]
    fn reads_cpuinfo() {
        let text = "processor\t: 0\nBogoMIPS\t: 243.75\nCPU implementer\t: 0x41\n\
                    CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd40\nCPU revision\t: 1\n";
        assert_eq!(from_cpuinfo(text), Some((0x41, 0xd40)));
        assert_eq!(from_cpuinfo("model name : Intel"), None);
    }

    #[test]
    fn names_gravitons_and_apple() {
        assert_eq!(model(0x41, 0xd0c, true), "AWS Graviton 2 (Neoverse N1)");
        assert_eq!(model(0x41, 0xd40, true), "AWS Graviton 3 (Neoverse V1)");
        assert_eq!(model(0x41, 0xd4f, true), "AWS Graviton 4 (Neoverse V2)");
        assert_eq!(
            model(0x41, 0xd0c, false),
            "Arm Neoverse N1 (the core of AWS Graviton 2)"
        );
        assert_eq!(model(0x61, 0x029, false), "Apple M1 Max Firestorm (P-core)");
        assert_eq!(model(0x51, 0x123, false), "Qualcomm part 0x123");
        assert_eq!(vendor(0x99), "implementer 0x99");
    }
}
