//! `fewstep distill`: train a few-step student from a teacher with a distillation objective.
//! The same trainer as `fewstep train`; what differs are the defaults (`configs/distill.toml`)
//! and that the student takes its network, initial weights and data from a teacher checkpoint.

use crate::cli::train::{path_str, require_data, run_config, RunArgs};
use crate::config::ConfigBuilder;
use crate::train::{checkpoint, TrainConfig};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use toml::Value;

/// The built-in defaults (`configs/distill.toml`).
pub const DEFAULTS: &str = include_str!("../../configs/distill.toml");

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Teacher checkpoint or run folder. The student starts from its EMA weights, with its
    /// network and (unless --data is given) its data. A denoiser plugin can teach instead:
    /// `[teacher_denoiser]` in the config (e.g. the exact `gmm`).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Distillation objective plugin, e.g. multistep-cd, multistep-ct, progressive
    /// [default: multistep-cd]; `fewstep list objective` shows all.
    #[arg(long)]
    pub objective: Option<String>,
    /// Student sampling steps S (the objective's `student_steps`) [default: 8].
    #[arg(long)]
    pub student_steps: Option<usize>,
    /// Training data (HDF5 `/data`) [default: the teacher's].
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl Args {
    /// Defaults, the config file, the flags, then what the teacher checkpoint implies.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let mut b = self
            .run
            .builder(DEFAULTS)?
            .set("teacher", path_str(&self.teacher))
            .plugin("objective", self.objective.as_deref())
            .set("data", path_str(&self.data));
        if let Some(s) = self.student_steps {
            b = set_in_table(b, "objective", "student_steps", Value::from(s as i64));
        }
        let teacher = b
            .table()
            .get("teacher")
            .and_then(Value::as_str)
            .map(PathBuf::from);
        if let (false, Some(teacher)) = (self.run.resume, teacher) {
            b = from_teacher(b, &teacher)?;
        }
        require_data(&b)?;
        let t = b.table();
        if !self.run.resume && !t.contains_key("teacher") && !t.contains_key("teacher_denoiser") {
            anyhow::bail!(
                "distillation needs a teacher: pass --teacher RUN (a checkpoint or run folder) or \
                 set `[teacher_denoiser]` (a denoiser plugin table) in --config"
            );
        }
        b.build()
    }
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
    Ok(b.set("denoiser", denoiser)
        .set("init", init)
        .set("data", data))
}

/// Sets `table.key = value` inside a plugin table (creating the table when missing).
pub fn set_in_table(b: ConfigBuilder, table: &str, key: &str, value: Value) -> ConfigBuilder {
    let mut t = match b.table().get(table) {
        Some(Value::Table(t)) => t.clone(),
        _ => toml::Table::new(),
    };
    t.insert(key.to_string(), value);
    b.set(table, Some(Value::Table(t)))
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.resolve()?;
    run_config(&cfg, a.run.resume)
}
