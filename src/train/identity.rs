//! A run's identity: everything that decides what a run trains — every field of its resolved
//! config, the bytes of its data file, and which teacher and initial checkpoints it learns from
//! — as sorted `key = value` entries and their SHA-256. Every checkpoint records both, so a
//! finished run is reused (`fewstep reproduce`) only when the run asked for now is the same run;
//! when it is not, the entries say what changed.

use super::{TrainConfig, PATH_KEYS};
use crate::checkpoint::{self, Meta};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The sorted entries of a run's identity: dotted config keys (`objective.student_steps`) and,
/// in words, the data's and the checkpoints' fingerprints (`data file sha256`).
///
/// The paths of the data, the teacher, the initial checkpoint and the run folder
/// ([`PATH_KEYS`]) are not entries: their contents are (the data's SHA-256, the checkpoints' run
/// hash and step), and the run folder is where the run is, not what it trains. So a run is the
/// same run whichever folder it was started from, and the absolute paths runs now store do not
/// make runs recorded with relative ones (by an older fewstep) look different: those entries
/// are left out of both sides when comparing ([`Identity::require_same`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity(BTreeMap<String, String>);

impl Identity {
    /// The identity of `cfg`: its fields, the SHA-256 of its data file, and the run hash and
    /// step of its `teacher` and `init` checkpoints.
    pub fn of(cfg: &TrainConfig) -> Result<Self> {
        let table: toml::Table = crate::config::to_toml(cfg)?
            .parse()
            .context("the resolved config")?;
        let mut entries = BTreeMap::new();
        flatten("", &table, &mut entries);
        for key in PATH_KEYS {
            entries.remove(key);
        }
        entries.insert("data file sha256".into(), file_sha256(&cfg.data)?);
        for (what, path) in [("teacher", &cfg.teacher), ("init", &cfg.init)] {
            let Some(path) = path else { continue };
            // A resumed run no longer reads `init`, which may be gone: its identity says so
            // (and then matches no recorded one). A damaged checkpoint is an error.
            let (step, hash) = match checkpoint::resolve(path) {
                Ok(ck) => {
                    let meta = checkpoint::load(&ck, &[])?.meta;
                    (meta.step.to_string(), run_hash(&meta))
                }
                Err(_) => ("(not found)".to_string(), "(not found)".to_string()),
            };
            entries.insert(format!("{what} checkpoint step"), step);
            entries.insert(format!("{what} run hash"), hash);
        }
        Ok(Identity(entries))
    }

    /// The entries without the [`PATH_KEYS`] an older fewstep recorded.
    fn without_paths(mut self) -> Self {
        for key in PATH_KEYS {
            self.0.remove(key);
        }
        self
    }

    /// The SHA-256 (hex) of the entries, one `key = value` line each, in key order.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.0 {
            h.update(format!("{k} = {v}\n").as_bytes());
        }
        hex(&h.finalize())
    }

    /// Whether the checkpoint `meta` recorded this identity (its path entries aside).
    pub fn recorded_in(&self, meta: &Meta) -> bool {
        Identity::recorded(meta).is_some_and(|old| old.without_paths() == *self)
    }

    /// The entries as JSON (what a checkpoint records).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("string map to JSON")
    }

    /// The identity a checkpoint recorded, if it recorded one.
    pub fn recorded(meta: &Meta) -> Option<Self> {
        let json = meta.identity.as_deref()?;
        serde_json::from_str(json).ok().map(Identity)
    }

    /// The entries that differ from `old`'s, as `key old -> new` (`(none)` where one side lacks
    /// the key).
    pub fn changes_from(&self, old: &Identity) -> Vec<String> {
        let none = "(none)".to_string();
        let keys: std::collections::BTreeSet<&String> = self.0.keys().chain(old.0.keys()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let (was, now) = (
                    old.0.get(k).unwrap_or(&none),
                    self.0.get(k).unwrap_or(&none),
                );
                (was != now).then(|| format!("{k} {was} -> {now}"))
            })
            .collect()
    }

    /// Refuses to reuse the run in `cfg.out` (whose latest checkpoint is `ckpt`) unless the
    /// checkpoint recorded this identity; the error lists what changed.
    pub fn require_same(&self, ckpt: &Path, meta: &Meta, out: &Path) -> Result<()> {
        let fix = format!(
            "choose a fresh --out, or remove {} to train it again",
            out.display()
        );
        let Some(old) = Identity::recorded(meta) else {
            bail!(
                "{} records no run identity (an older fewstep wrote it), so whether it was \
                 trained with this config is unknown; {fix}",
                ckpt.display()
            );
        };
        let old = old.without_paths();
        if old == *self {
            return Ok(());
        }
        bail!(
            "{} holds a run with another config ({}); reusing it would report a different \
             run's numbers; {fix}",
            out.display(),
            self.changes_from(&old).join(", ")
        )
    }
}

/// The run hash of a checkpoint: its recorded identity's hash, or for a checkpoint without one
/// the SHA-256 of its config text.
pub fn run_hash(meta: &Meta) -> String {
    match Identity::recorded(meta) {
        Some(id) => id.hash(),
        None => hex(&Sha256::digest(meta.config.as_bytes())),
    }
}

/// `table`'s values under dotted keys (`prefix.key`); arrays as TOML.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = match prefix {
            "" => k.clone(),
            p => format!("{p}.{k}"),
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            v => {
                out.insert(key, v.to_string());
            }
        }
    }
}

/// The SHA-256 (hex) of a file's bytes, read in blocks.
fn file_sha256(path: &Path) -> Result<String> {
    let cannot = || format!("cannot read the training data {}", path.display());
    let mut f = std::fs::File::open(path).with_context(cannot)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(cannot)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
