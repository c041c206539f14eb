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

/// Refuses an in-memory buffer of `bytes` bytes (`what` says what it holds) larger than this
/// machine's physical memory: allocating it would abort the process or swap it to a halt.
pub fn check_memory(what: &str, bytes: u128) -> Result<()> {
    if let Some(total) = physical_memory() {
        if bytes > u128::from(total) {
            anyhow::bail!(
                "{what} would take {} of memory, more than this machine's {}; choose a smaller size",
                human(bytes),
                human(u128::from(total))
            );
        }
    }
    Ok(())
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
