//! Distillation runs (`fewstep distill`): the trainer on distillation defaults, with the student
//! taking its network, initial weights and data from a teacher checkpoint.

use super::train::{builder, check_paths, require_data};
use crate::checkpoint;
use crate::config::{ConfigBuilder, Overrides};
use crate::train::TrainConfig;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use toml::Value;

/// The built-in defaults of `fewstep distill` (`configs/distill.toml`).
pub const DEFAULTS: &str = include_str!("../../configs/distill.toml");

/// A student's config: [`DEFAULTS`] (or, resuming, the run's own config), the config `file`,
/// `overrides`, then what the `teacher` checkpoint implies ([`from_teacher`]); `student_steps`
/// goes to the objective ([`crate::objective::DistillObjective::set_student_steps`]).
pub fn resolve(
    file: Option<&Path>,
    overrides: &Overrides,
    student_steps: Option<usize>,
    resume: bool,
) -> Result<TrainConfig> {
    let mut b = builder(DEFAULTS, file, overrides, resume)?;
    let teacher = b
        .table()
        .get("teacher")
        .and_then(Value::as_str)
        .map(PathBuf::from);
    if let (false, Some(teacher)) = (resume, teacher) {
        b = from_teacher(b, &teacher)?;
    }
    require_data(&b)?;
    check_paths(&b, resume)?;
    let t = b.table();
    if !resume && !t.contains_key("teacher") && !t.contains_key("teacher_denoiser") {
        bail!(
            "distillation needs a teacher: pass --teacher RUN (a checkpoint or run folder) or \
             set `[teacher_denoiser]` (a denoiser plugin table) in --config"
        );
    }
    let mut cfg: TrainConfig = b.build()?;
    if let Some(s) = student_steps {
        cfg.objective
            .set_student_steps(s)
            .with_context(|| format!("--student-steps {s}"))?;
    }
    cfg.check().map_err(|e| b.locate(e))?;
    Ok(cfg)
}

/// Fills `denoiser`, `init` and `data` from the teacher checkpoint where the config leaves
/// them unset: a student is the teacher's network, started from the teacher's weights.
pub fn from_teacher(b: ConfigBuilder, teacher: &Path) -> Result<ConfigBuilder> {
    let path = checkpoint::resolve(teacher)
        .with_context(|| format!("cannot find the teacher {}", teacher.display()))?;
    let meta = checkpoint::load(&path, &[])?.meta;
    let config: toml::Table = meta.config.parse().context("the teacher's config")?;
    let unset = |key: &str| !b.table().contains_key(key);
    let denoiser = match unset("denoiser") {
        true => Some(Value::Table(checkpoint::denoiser_table(&meta)?)),
        false => None,
    };
    let init = unset("init").then(|| teacher.display().to_string());
    let data = unset("data").then(|| config.get("data").cloned()).flatten();
    let origin = format!("the config of the teacher {}", path.display());
    Ok(b.set("denoiser", denoiser)
        .set("init", init)
        .set_from("data", data, &origin))
}
