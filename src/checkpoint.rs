//! Checkpoints: one safetensors file per save holding every part of a network's state (weights,
//! EMA, AdamW moments) with metadata — the resolved run config (TOML), the step, the data row
//! shape and the network's description. Files are `ckpt-<step>.safetensors` in the run folder,
//! written atomically ([`crate::output`]), so a crash never leaves a torn file.

use crate::tensor::{HostTensor, StateDict};
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Written to every checkpoint's metadata as `format`.
pub const FORMAT: &str = "fewstep-checkpoint-1";

/// What a checkpoint records besides tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// Optimisation steps done.
    pub step: u64,
    /// The resolved training config as TOML (its `[denoiser]` table rebuilds the network).
    pub config: String,
    /// Shape of one data row, e.g. `[2]` or `[3, 32, 32]`.
    pub row_shape: Vec<usize>,
    /// The network's one-line description.
    pub network: String,
    /// Sampling steps of a fixed-step student (distillation), if any.
    pub student_steps: Option<usize>,
    /// The run's identity (`crate::train::identity`) as JSON: what decides whether a finished
    /// run may be reused. Absent from checkpoints written before it existed.
    pub identity: Option<String>,
    /// The SHA-256 of that identity (`run_hash`).
    pub run_hash: Option<String>,
}

/// A loaded checkpoint: its file, metadata and the requested tensors.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: Meta,
    pub state: StateDict,
}

/// `ckpt-000001000.safetensors` for step 1000 (zero-padded so names sort by step).
pub fn file_name(step: u64) -> String {
    format!("ckpt-{step:09}.safetensors")
}

/// Writes `state` with `meta` as `dir/ckpt-<step>.safetensors`, atomically; returns the path.
pub fn save(dir: &Path, meta: &Meta, state: &StateDict) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = state
        .iter()
        .map(|(k, t)| {
            let b = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), b, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| Ok((k.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow!("cannot serialise checkpoint: {e:?}"))?;
    let mut info = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), meta.step.to_string()),
        ("config".to_string(), meta.config.clone()),
        (
            "row_shape".to_string(),
            serde_json::to_string(&meta.row_shape)?,
        ),
        ("network".to_string(), meta.network.clone()),
    ]);
    if let Some(s) = meta.student_steps {
        info.insert("student_steps".into(), s.to_string());
    }
    if let Some(id) = &meta.identity {
        info.insert("run_identity".into(), id.clone());
    }
    if let Some(h) = &meta.run_hash {
        info.insert("run_hash".into(), h.clone());
    }
    let data = safetensors::serialize(views, &Some(info))
        .map_err(|e| anyhow!("cannot serialise checkpoint: {e:?}"))?;
    let path = dir.join(file_name(meta.step));
    crate::output::write_bytes(&path, &data)?;
    Ok(path)
}

/// Reads a checkpoint, keeping only tensors whose part (the name up to the first `.`) is in
/// `parts` (e.g. `["ema"]` to sample). With no parts it reads only the header (the metadata),
/// not the tensors.
pub fn load(path: &Path, parts: &[&str]) -> Result<Checkpoint> {
    let bad = |e: safetensors::SafeTensorError| {
        anyhow!(
            "{} is not a readable safetensors checkpoint: {e:?}",
            path.display()
        )
    };
    if parts.is_empty() {
        let header = read_header(path)?;
        return Ok(Checkpoint {
            path: path.to_path_buf(),
            meta: meta_of(path, &header)?,
            state: StateDict::new(),
        });
    }
    let buf = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&buf).map_err(bad)?;
    let meta = meta_of(path, &header)?;
    let tensors = SafeTensors::deserialize(&buf).map_err(bad)?;
    let mut state = StateDict::new();
    for (name, view) in tensors.tensors() {
        let part = name.split('.').next().unwrap_or_default();
        if !parts.contains(&part) {
            continue;
        }
        if view.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor `{name}` is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // A NaN or infinity in the weights would sample NaN everywhere without a word.
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            let count = values.iter().filter(|v| !v.is_finite()).count();
            bail!(
                "{}: tensor `{name}` holds {count} non-finite value(s) (the first, {}, at flat \
                 index {at}): the file is damaged or the run diverged; use an earlier checkpoint",
                path.display(),
                values[at]
            );
        }
        let shape = view.shape().to_vec();
        state.insert(name, HostTensor { shape, values });
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        meta,
        state,
    })
}

/// The safetensors header of `path` (8-byte little-endian length, then that much JSON), read
/// without the tensor data; the file must be as long as the header says.
fn read_header(path: &Path) -> Result<Metadata> {
    let cannot = || format!("cannot read checkpoint {}", path.display());
    let mut f = std::fs::File::open(path).with_context(cannot)?;
    let file_len = f.metadata().with_context(cannot)?.len();
    let not_safetensors = |why: &str| {
        anyhow!(
            "{} is not a readable safetensors checkpoint: {why}",
            path.display()
        )
    };
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| not_safetensors("shorter than its 8-byte header length"))?;
    let n = u64::from_le_bytes(len);
    // safetensors' own bound on the header (100 MB).
    if n > 100_000_000 || 8 + n > file_len {
        return Err(not_safetensors(&format!(
            "header length {n} does not fit the file ({file_len} bytes)"
        )));
    }
    let mut json = vec![0u8; n as usize];
    f.read_exact(&mut json).with_context(cannot)?;
    let header: Metadata =
        serde_json::from_slice(&json).map_err(|e| not_safetensors(&format!("bad header: {e}")))?;
    let data_len = header
        .tensors()
        .values()
        .map(|t| t.data_offsets.1 as u64)
        .max()
        .unwrap_or(0);
    // Offsets come from the file: added without overflow (n is at most 100 MB here).
    if (8 + n).checked_add(data_len) != Some(file_len) {
        return Err(not_safetensors(&format!(
            "the header describes {data_len} bytes of tensors after its {} bytes, the file has \
             {file_len} (truncated?)",
            8 + n
        )));
    }
    Ok(header)
}

/// The fewstep metadata of a checkpoint's header.
fn meta_of(path: &Path, header: &Metadata) -> Result<Meta> {
    let info = header.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        info.get(k).cloned().ok_or_else(|| {
            anyhow!(
                "{} has no `{k}` in its metadata: not a fewstep checkpoint ({FORMAT})",
                path.display()
            )
        })
    };
    if field("format")? != FORMAT {
        bail!(
            "{}: checkpoint format `{}`, this build reads `{FORMAT}`",
            path.display(),
            field("format")?
        );
    }
    let row_shape: Vec<usize> =
        serde_json::from_str(&field("row_shape")?).context("metadata `row_shape`")?;
    check_row_shape(path, &row_shape, header)?;
    Ok(Meta {
        step: field("step")?.parse().context("metadata `step`")?,
        config: field("config")?,
        row_shape,
        network: field("network")?,
        student_steps: info.get("student_steps").and_then(|s| s.parse().ok()),
        identity: info.get("run_identity").cloned(),
        run_hash: info.get("run_hash").cloned(),
    })
}

/// The row shape sizes the network built before its weights are loaded, so a damaged one must
/// not ask for more than the file can back: every network reads each value of a row through at
/// least one weight of its own (the first layer or patch embedding), so a row has no more values
/// than the checkpoint has weights.
fn check_row_shape(path: &Path, row_shape: &[usize], header: &Metadata) -> Result<()> {
    let weights: u64 = header
        .tensors()
        .values()
        .map(|t| (t.data_offsets.1.saturating_sub(t.data_offsets.0) / 4) as u64)
        .sum();
    let values = row_shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    match values {
        Some(v) if v >= 1 && v <= weights => Ok(()),
        _ => bail!(
            "{}: metadata `row_shape` {row_shape:?} does not fit the checkpoint's {weights} \
             weights (a row has at least one value, and no more than the network has weights): \
             the file is damaged",
            path.display()
        ),
    }
}

/// The checkpoints in a run folder as (step, path), oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(step) = name
            .strip_prefix("ckpt-")
            .and_then(|s| s.strip_suffix(".safetensors"))
            .and_then(|s| s.parse().ok())
        {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The latest checkpoint of a run folder.
pub fn latest(dir: &Path) -> Result<PathBuf> {
    list(dir)?.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "no checkpoint (ckpt-<step>.safetensors) in {}: train there first, or point to a \
             checkpoint file",
            dir.display()
        )
    })
}

/// A checkpoint file from a file or a run folder (its latest checkpoint).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        latest(path)
    } else if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        bail!(
            "checkpoint {} does not exist (give a checkpoint file or a run folder)",
            path.display()
        )
    }
}

/// Deletes all but the newest `keep` checkpoints of a run folder (`keep` = 0 keeps all).
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(dir)?;
    for (_, p) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

/// The `[denoiser]` table of a checkpoint's config, as TOML (what rebuilds its network).
pub fn denoiser_table(meta: &Meta) -> Result<toml::Table> {
    config_table(meta, "denoiser")
}

/// The `[key]` table of the checkpoint's training config (e.g. its `schedule`).
pub fn config_table(meta: &Meta, key: &str) -> Result<toml::Table> {
    let config: toml::Table = meta.config.parse().context("checkpoint config")?;
    match config.get(key) {
        Some(toml::Value::Table(t)) => Ok(t.clone()),
        _ => bail!("the checkpoint's config has no [{key}] table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint file of `header` (its tensors' metadata as JSON) and `data_len` zero bytes.
    fn file_with(
        dir: &Path,
        row_shape: &str,
        tensor: serde_json::Value,
        data_len: usize,
    ) -> PathBuf {
        let header = serde_json::json!({
            "__metadata__": {
                "format": FORMAT, "step": "1", "config": "", "row_shape": row_shape, "network": "",
            },
            "ema.w": tensor,
        })
        .to_string();
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.resize(b.len() + data_len, 0);
        let path = dir.join("ckpt.safetensors");
        std::fs::write(&path, b).unwrap();
        path
    }

    #[test]
    fn tensor_offsets_near_the_top_of_u64_are_refused_not_overflowed() {
        let dir = tempfile::tempdir().unwrap();
        let tensor =
            serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [0, u64::MAX]});
        let path = file_with(dir.path(), "[1]", tensor, 4);
        for parts in [&[][..], &["ema"][..]] {
            let e = format!("{:#}", load(&path, parts).err().unwrap());
            assert!(e.contains("not a readable safetensors checkpoint"), "{e}");
        }
    }

    #[test]
    fn a_row_shape_the_weights_cannot_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tensor = serde_json::json!({"dtype": "F32", "shape": [6], "data_offsets": [0, 24]});
        for (row_shape, fits) in [
            ("[6]", true),
            ("[2, 3]", true),
            ("[7]", false),
            ("[0]", false),
            ("[1000000000000]", false),
            ("[4294967296, 4294967296]", false),
        ] {
            let path = file_with(dir.path(), row_shape, tensor.clone(), 24);
            match (load(&path, &[]), fits) {
                (Ok(ck), true) => assert_eq!(ck.meta.row_shape.iter().product::<usize>(), 6),
                (Err(e), false) => {
                    let e = e.to_string();
                    assert!(e.contains("row_shape") && e.contains("6 weights"), "{e}");
                }
                (r, _) => panic!("{row_shape}: {:?}", r.map(|c| c.meta)),
            }
        }
    }
}
