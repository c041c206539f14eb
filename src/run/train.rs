//! Training runs (`fewstep train`, and the trainer under `fewstep distill`): configs resolved
//! from the defaults, a file and overrides, then the trainer.

use crate::checkpoint;
use crate::config::{ConfigBuilder, Overrides};
use crate::train::identity::Identity;
use crate::train::{self, TrainConfig, TrainOutcome};
use anyhow::{bail, Result};
use std::path::Path;

/// The built-in defaults of `fewstep train` (`configs/train.toml`).
pub const DEFAULTS: &str = include_str!("../../configs/train.toml");

/// `defaults` (or, resuming, the config of the run's latest checkpoint), then the config `file`,
/// then `overrides`. The run folder of a resume is the overrides' or the file's `out`.
pub fn builder(
    defaults: &str,
    file: Option<&Path>,
    overrides: &Overrides,
    resume: bool,
) -> Result<ConfigBuilder> {
    let base = if resume {
        let peek = ConfigBuilder::from_defaults(defaults)?
            .file(file)?
            .apply(overrides);
        let Some(out) = peek.table().get("out").and_then(|v| v.as_str()) else {
            bail!("--resume needs the run folder: pass --out DIR");
        };
        let latest = checkpoint::latest(Path::new(out))?;
        let config = checkpoint::load(&latest, &[])?.meta.config;
        ConfigBuilder::from_stored(&config, &format!("the config of {}", latest.display()))?
    } else {
        ConfigBuilder::from_defaults(defaults)?
    };
    Ok(base.file(file)?.apply(overrides))
}

/// The path keys a run reads, checked ([`ConfigBuilder::check_paths`]) where they came from a
/// config file or a stored config; a resumed run no longer reads `init`.
pub fn check_paths(b: &ConfigBuilder, resume: bool) -> Result<()> {
    match resume {
        true => b.check_paths(&["data", "teacher"]),
        false => b.check_paths(&["data", "teacher", "init"]),
    }
}

/// A `fewstep train` config: [`builder`] over [`DEFAULTS`], with training data required.
pub fn resolve(file: Option<&Path>, overrides: &Overrides, resume: bool) -> Result<TrainConfig> {
    let b = builder(DEFAULTS, file, overrides, resume)?;
    require_data(&b)?;
    check_paths(&b, resume)?;
    let cfg: TrainConfig = b.build()?;
    cfg.check().map_err(|e| b.locate(e))?;
    Ok(cfg)
}

/// Refuses a config without `data`, naming the flag.
pub fn require_data(b: &ConfigBuilder) -> Result<()> {
    if !b.table().contains_key("data") {
        bail!("no training data: pass --data FILE (HDF5 with `/data`)");
    }
    Ok(())
}

/// Trains `cfg` to its last step with a progress bar; with `resume`, from the run's latest
/// checkpoint.
pub fn run(cfg: &TrainConfig, resume: bool) -> Result<TrainOutcome> {
    train::train(cfg, resume, true)
}

/// Trains `cfg` to its last step unless it is there already: reuses a finished run (`None`),
/// resumes an unfinished one — either only when the run in `cfg.out` has `cfg`'s whole identity
/// (config, data bytes, teacher; [`Identity`]), else it refuses, saying what changed.
pub fn finish(cfg: &TrainConfig) -> Result<Option<TrainOutcome>> {
    match check_reusable(cfg)? {
        None => run(cfg, false).map(Some),
        Some(step) if step >= cfg.steps => Ok(None),
        Some(_) => run(cfg, true).map(Some),
    }
}

/// The step of the run in `cfg.out` when it is `cfg`'s run ([`Identity`]: config, data bytes,
/// teacher), `None` when there is none yet; an error saying what changed when it is another.
pub fn check_reusable(cfg: &TrainConfig) -> Result<Option<u64>> {
    let Some((step, path)) = checkpoint::list(&cfg.out)?.pop() else {
        return Ok(None);
    };
    let meta = checkpoint::load(&path, &[])?.meta;
    Identity::of(cfg)?.require_same(&path, &meta, &cfg.out)?;
    Ok(Some(step))
}
