//! Linux: cache sizes from sysfs, and small readers of `/proc` and `/sys` text files used by the
//! architecture modules. Everything here only reads files; a missing file is `None`.

use super::Caches;
use std::path::Path;

/// A sysfs or procfs file's contents, trimmed; `None` when it cannot be read.
pub(super) fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Caches of cpu0 from `/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}`.
pub(super) fn caches() -> Caches {
    let mut c = Caches::default();
    let dir = Path::new("/sys/devices/system/cpu/cpu0/cache");
    for i in 0..8 {
        let idx = dir.join(format!("index{i}"));
        let (Some(level), Some(kind), Some(size)) = (
            read_trimmed(idx.join("level")),
            read_trimmed(idx.join("type")),
            read_trimmed(idx.join("size")),
        ) else {
            continue;
        };
        let size = parse_size(&size);
        match (level.as_str(), kind.as_str()) {
            ("1", "Data") => c.l1d = size,
            ("2", "Data" | "Unified") => c.l2 = size,
            ("3", "Data" | "Unified") => c.l3 = size,
            _ => {}
        }
    }
    c
}

/// A sysfs cache size: "48K", "2048K", "32M", or bytes without a suffix.
pub(super) fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok().map(|n| n * mult)
}

/// The value of the first `key : value` line of `/proc/cpuinfo` whose key is `key`.
#[allow(dead_code)] // used by the aarch64 and fallback modules only
pub(super) fn cpuinfo_field(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    field(&text, key)
}

#[allow(dead_code)]
pub(super) fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("107520K\n"), Some(107520 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("xK"), None);
    }

    #[test]
    fn cpuinfo_fields() {
        let text = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";
        assert_eq!(field(text, "CPU part").as_deref(), Some("0xd0c"));
        assert_eq!(field(text, "CPU implementer").as_deref(), Some("0x41"));
        assert_eq!(field(text, "model name"), None);
    }
}
