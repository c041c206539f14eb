//! Atomic writes: the one way fewstep writes an output file. The content goes to a fresh,
//! uniquely named temporary file beside the target (`.NAME.XXXXXX.tmp`), which is flushed to
//! disk and then renamed over the target, and the folder is synced so the rename survives a
//! crash. A reader sees the old file or the new one, never half of one; a failed write leaves the
//! old file as it was and removes its temporary file (only a killed process leaves one behind,
//! under that hidden name).

use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use tempfile::NamedTempFile;

/// Refuses an output path that names one of the command's inputs (the same file, also through a
/// symlink or another spelling of the path): writing it would replace the data being read.
/// Called before any work starts.
pub fn refuse_input(flag: &str, out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    let Ok(out_id) = file_id(out) else {
        return Ok(()); // no file there yet: nothing to overwrite
    };
    for (what, input) in inputs {
        if file_id(input).is_ok_and(|id| id == out_id) {
            anyhow::bail!(
                "{flag} {} is the {what} this command reads ({}); choose another output file",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Checks an output file before any work starts: it must not be one of the command's `inputs`
/// ([`refuse_input`]), nor a folder or a read-only file; a file (or symlink) already there is
/// replaced only when `force` is given; and its folder (or the nearest one that exists, when the
/// rest is still to be created) must be writable. `flag` is how the user named the path
/// (`--out`, `--grid`).
pub fn check_target(flag: &str, out: &Path, force: bool, inputs: &[(&str, &Path)]) -> Result<()> {
    refuse_input(flag, out, inputs)?;
    if let Ok(meta) = std::fs::symlink_metadata(out) {
        let shown = out.display();
        if std::fs::metadata(out).is_ok_and(|m| m.is_dir()) {
            anyhow::bail!("{flag} {shown} is a folder; name a file in it");
        }
        if !meta.file_type().is_symlink() && meta.permissions().readonly() {
            anyhow::bail!(
                "{flag} {shown} is read-only; fewstep does not replace it (choose another file)"
            );
        }
        if !force {
            anyhow::bail!(
                "{flag} {shown} exists; pass --force to replace it, or choose another file"
            );
        }
    }
    check_writable_folder(flag, folder(out))
}

/// Checks an output folder before any work starts: if it exists it must be a folder, and the
/// folder (or its nearest existing ancestor) must take new files.
pub fn check_folder(flag: &str, dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{flag} {} is a file, not a folder", dir.display());
    }
    check_writable_folder(flag, dir)
}

/// Probes that a file can be created in `dir` or, if it does not exist yet, in its nearest
/// existing ancestor (an anonymous temporary file: nothing is left behind).
fn check_writable_folder(flag: &str, dir: &Path) -> Result<()> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    if !at.is_dir() {
        anyhow::bail!(
            "{flag}: {} is a file, so {} cannot be created",
            at.display(),
            dir.display()
        );
    }
    tempfile::tempfile_in(at)
        .map(drop)
        .with_context(|| format!("{flag}: cannot write in {}", at.display()))
}

/// What identifies the file `path` resolves to: (device, inode) on Unix, else its canonical path.
fn file_id(path: &Path) -> std::io::Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(format!("{}:{}", meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        Ok(std::fs::canonicalize(path)?.display().to_string())
    }
}

/// Writes `bytes` to `path` atomically (creating its folder).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |f| {
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", path.display()))
    })
}

/// Writes `path` atomically through `fill`, which writes the whole content to the file it gets
/// (the temporary file; a buffered writer around it is fine, if flushed).
pub fn write_with(path: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    // fill's own error passes through unchanged: it names the problem.
    fill(tmp.as_file_mut())?;
    finish(tmp, path)
}

/// Writes `path` atomically through `fill`, which gets the temporary file's path and creates the
/// content there (for writers that open files by name, such as HDF5). `fill` must close what it
/// opened before returning.
pub fn write_path_with(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_beside(path)?;
    fill(tmp.path())?;
    finish(tmp, path)
}

/// The folder `path` is written to (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A new temporary file in `path`'s folder (created if missing), readable like any new file
/// (tempfile's default is owner-only).
fn temp_beside(path: &Path) -> Result<NamedTempFile> {
    let dir = folder(path);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let prefix = format!(".{name}.");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Masked by the umask, as for File::create.
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

/// Syncs the written temporary file, renames it to `path` and syncs the folder.
fn finish(tmp: NamedTempFile, path: &Path) -> Result<()> {
    // Reopened by name: a writer given the path may have replaced the file the handle refers to.
    File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the written file to {}", path.display()))?;
    // The rename lives in the folder's entry: sync it too (a no-op error on systems that cannot
    // open folders, hence ignored there).
    #[cfg(unix)]
    File::open(folder(path))
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", folder(path).display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything in `dir` (names), sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_bytes(&path, b"old").unwrap();
        write_bytes(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(listing(&dir.path().join("sub")), ["out.txt"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_ne!(
                mode & 0o044,
                0,
                "readable beyond the owner as File::create makes it"
            );
        }
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.csv");
        write_bytes(&path, b"old").unwrap();
        let err = write_with(&path, |f| {
            f.write_all(b"half of the new")?;
            anyhow::bail!("the serialiser failed")
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("the serialiser failed"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(listing(dir.path()), ["table.csv"]);

        let err = write_path_with(&path, |tmp| {
            std::fs::write(tmp, "half")?;
            anyhow::bail!("the library failed")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("the library failed"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(listing(dir.path()), ["table.csv"]);
    }

    #[test]
    fn a_panicking_write_keeps_the_old_file_and_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        write_bytes(&path, b"old").unwrap();
        let r = std::panic::catch_unwind(|| {
            write_with(&path, |f| {
                f.write_all(b"half").unwrap();
                panic!("killed mid-write")
            })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(listing(dir.path()), ["config.toml"]);
    }
}
