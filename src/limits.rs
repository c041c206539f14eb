//! Resource checks before work starts: a size the user asked for (rows, a batch) that the disk or
//! the memory of this machine cannot hold is refused with both sizes, instead of a write that
//! fails hours later or an allocation that aborts the process.

use anyhow::Result;
use std::path::Path;

/// Refuses to start writing `bytes` bytes to `out` when its file system (the nearest existing
/// folder's) has less free space, naming both sizes. `what` says what would be written.
pub fn check_space(out: &Path, what: &str, bytes: u128) -> Result<()> {
    let Some(free) = free_bytes(folder_of(out)) else {
        return Ok(()); // unknown: the write itself reports a full disk
    };
    if bytes > u128::from(free) {
        anyhow::bail!(
            "{what} would take {} but {} has {} free; reduce the size or choose another place",
            human(bytes),
            folder_of(out).display(),
            human(u128::from(free))
        );
    }
    Ok(())
}

/// Free bytes for an unprivileged user on the file system of `dir` (or its nearest existing
/// ancestor); `None` where that cannot be asked.
fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let mut at = dir;
        while !at.exists() {
            at = at.parent().filter(|p| !p.as_os_str().is_empty())?;
        }
        let at = if at.as_os_str().is_empty() {
            Path::new(".")
        } else {
            at
        };
        let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// A byte count as B, KiB, MiB, GiB or TiB with three significant digits.
pub fn human(bytes: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", units[u])
    }
}

/// Refuses an in-memory buffer of `bytes` bytes (`what` says what it holds) larger than the
/// memory this machine has available now (`MemAvailable` of /proc/meminfo, else the physical
/// total): allocating it would abort the process or swap it to a halt.
pub fn check_memory(what: &str, bytes: u128) -> Result<()> {
    match available_memory() {
        Some(memory) => refuse_above(what, bytes, memory),
        None => Ok(()),
    }
}

/// What [`check_memory`] measures against: bytes and what they are, in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub bytes: u64,
    /// `available` (free now, counting reclaimable caches) or `physical` (the total, where what
    /// is available cannot be read).
    pub kind: &'static str,
}

fn refuse_above(what: &str, bytes: u128, memory: Memory) -> Result<()> {
    if bytes > u128::from(memory.bytes) {
        anyhow::bail!(
            "{what} would take {} of memory, more than the {} {} this machine has; choose a \
             smaller size",
            human(bytes),
            human(u128::from(memory.bytes)),
            memory.kind
        );
    }
    Ok(())
}

/// The memory available now, else the physical total, `None` where neither is known.
pub fn available_memory() -> Option<Memory> {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_available(&text));
    match available {
        Some(bytes) => Some(Memory {
            bytes,
            kind: "available",
        }),
        None => physical_memory().map(|bytes| Memory {
            bytes,
            kind: "physical",
        }),
    }
}

/// `MemAvailable` of a /proc/meminfo text, in bytes (the file says kB, meaning KiB).
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(kib.saturating_mul(1024)),
        _ => None,
    }
}

/// Bytes of `n` values of `elem` bytes each, for [`check_memory`] (never overflows).
pub fn bytes_of(n: usize, elem: usize) -> u128 {
    n as u128 * elem as u128
}

/// Physical memory in bytes, `None` where unknown.
fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (pages > 0 && size > 0).then(|| (pages as u64).saturating_mul(size as u64))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The folder `path` is written to (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       131072000 kB\nMemFree:         1000000 kB\n\
                           MemAvailable:    2000000 kB\nBuffers:          123456 kB\n";

    #[test]
    fn available_memory_is_read_from_meminfo() {
        assert_eq!(mem_available(MEMINFO), Some(2_000_000 * 1024));
        // Kernels before 3.14 have no MemAvailable; a unit other than kB is not guessed at.
        assert_eq!(mem_available("MemTotal: 100 kB\nMemFree: 50 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: 100 MB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn a_buffer_above_what_is_available_is_refused_naming_both_sizes() {
        let memory = Memory {
            bytes: mem_available(MEMINFO).unwrap(),
            kind: "available",
        };
        // Exactly what is available fits (the 125 GiB total does not count); a byte more does not.
        assert!(refuse_above("x", 2_000_000 * 1024, memory).is_ok());
        let e = refuse_above("a grid", 2_000_000 * 1024 + 1, memory)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a grid would take 1.907 GiB"), "{e}");
        assert!(e.contains("the 1.907 GiB available"), "{e}");
        // On this machine: whatever is available is at most the physical total.
        if let (Some(now), Some(total)) = (available_memory(), physical_memory()) {
            assert!(now.bytes <= total, "{now:?} > {total}");
        }
    }
}
