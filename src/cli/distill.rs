//! `fewstep distill`: train a few-step student from a teacher with a distillation objective.
//! The same trainer as `fewstep train`; what differs are the defaults (`configs/distill.toml`)
//! and that the student takes its network, initial weights and data from a teacher checkpoint.

use crate::cli::train::{run_config, RunArgs};
use crate::run::distill::resolve;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
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
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub student_steps: Option<usize>,
    /// Training data (HDF5 `/data`) [default: the teacher's].
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(a: Args) -> Result<()> {
    let overrides = a
        .run
        .overrides()
        .path("teacher", a.teacher.as_deref())
        .plugin("objective", a.objective.as_deref())
        .path("data", a.data.as_deref());
    let cfg = resolve(
        a.run.config.as_deref(),
        &overrides,
        a.student_steps,
        a.run.resume,
    )?;
    run_config(&cfg, a.run.resume, a.run.force.force)
}
