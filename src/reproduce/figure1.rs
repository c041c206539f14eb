//! `fewstep reproduce figure1`: sampling trajectories of 1-, 2- and 4-step consistency models
//! on the 1-D two-modes mixture beside DDIM with the exact denoiser (the "infinite-step" panel),
//! as the paper's Figure 1. The students are real: trained and scored by the table machinery of
//! [`super::distill`], then each is drawn as the DDIM lines its predictions imply inside every
//! segment, t = 0 (data) on top.

use super::distill::{self, Presets, TableConfig};
use crate::config::ConfigBuilder;
use crate::denoiser::{BuildCtx, DenoiserSpec, Level};
use crate::integrator::ddim_step;
use crate::plot::{path_panels, PathPanel};
use crate::schedule::Schedule;
use crate::tensor::{normal, seeded_device, Batch};
use crate::train::checkpoint;
use anyhow::{bail, Context, Result};
use dfdx::shapes::HasShape;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The figure's settings.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Figure1Config {
    /// The students (its first method, at each of its student steps) and their scores.
    pub table: TableConfig,
    /// Trajectories per panel, from seeded z_1.
    pub trajectories: usize,
    /// Points drawn inside each student segment.
    pub points_per_segment: usize,
    /// The right-hand panel's denoiser (the exact one of the mixture).
    pub exact_denoiser: Box<dyn DenoiserSpec>,
    /// DDIM steps of the right-hand panel.
    pub exact_steps: usize,
}

pub fn load(
    presets: Presets,
    preset: &str,
    config: Option<&Path>,
    scale: f64,
) -> Result<Figure1Config> {
    let base = super::preset_text("figure1", presets, preset)?;
    let mut cfg: Figure1Config = ConfigBuilder::from_defaults(base)?.file(config)?.build()?;
    distill::scale_config(&mut cfg.table, scale)?;
    Ok(cfg)
}

/// Trains and scores the students, then writes `figure1.png` beside the table's files.
pub fn run(cfg: &Figure1Config, out: &Path) -> Result<String> {
    let t = &cfg.table;
    let (Some(dataset), Some(method)) = (t.datasets.first(), t.methods.first()) else {
        bail!("figure1 needs a dataset and a method in its [table]");
    };
    let md = distill::run("figure1", t, out)?;
    let dev = seeded_device(t.seed);
    let z1 = normal(&dev, cfg.trajectories, 1);
    let mut panels = Vec::new();
    for &steps in &t.student_steps {
        let run = distill::student_dir(out, dataset, &method.label, steps);
        panels.push(PathPanel {
            title: format!("{steps}-step {}", method.label),
            x_label: "z".into(),
            y_label: "t".into(),
            paths: student_paths(&run, &dev, &z1, cfg.points_per_segment)
                .with_context(|| format!("trajectories of {}", run.display()))?,
        });
    }
    let data = distill::data_path(out, dataset);
    let exact = cfg.exact_denoiser.build(&BuildCtx {
        dev: dev.clone(),
        data: Some(data),
        checkpoint: None,
    })?;
    let first = distill::student_dir(out, dataset, &method.label, t.student_steps[0]);
    let schedule = schedule_of(&checkpoint::load(&checkpoint::resolve(&first)?, &[])?.meta)?;
    panels.push(PathPanel {
        title: format!("DDIM, {} steps", cfg.exact_steps),
        x_label: "z".into(),
        y_label: "t".into(),
        paths: trajectories(
            &dev,
            schedule.as_ref(),
            exact.as_ref(),
            &z1,
            cfg.exact_steps,
            1,
        )?,
    });
    path_panels(&out.join("figure1.png"), &panels)?;
    Ok(md)
}

/// The schedule a checkpoint was trained on (a student samples on its grid).
fn schedule_of(meta: &checkpoint::Meta) -> Result<Box<dyn Schedule>> {
    let table = checkpoint::config_table(meta, "schedule")?;
    Ok(Box::<dyn Schedule>::deserialize(toml::Value::Table(table))?)
}

fn student_paths(
    run: &Path,
    dev: &crate::tensor::Dev,
    z1: &Batch,
    points: usize,
) -> Result<Vec<Vec<(f64, f64)>>> {
    let path = checkpoint::resolve(run)?;
    let meta = checkpoint::load(&path, &[])?.meta;
    let Some(steps) = meta.student_steps else {
        bail!("{} is not a fixed-step student", path.display());
    };
    let student = checkpoint::load_sampler(&path, dev)?;
    trajectories(
        dev,
        schedule_of(&meta)?.as_ref(),
        student.as_ref(),
        z1,
        steps,
        points,
    )
}

/// The paths of the rows of `z1` under DDIM on a `steps`-step uniform grid: at each step the
/// denoiser's x_hat fixes the DDIM line z_u = alpha_u x_hat + sigma_u eps_hat, drawn at `points`
/// times inside the step.
pub fn trajectories(
    dev: &crate::tensor::Dev,
    schedule: &dyn Schedule,
    denoiser: &dyn crate::denoiser::Denoiser,
    z1: &Batch,
    steps: usize,
    points: usize,
) -> Result<Vec<Vec<(f64, f64)>>> {
    let rows = z1.shape().0;
    let mut paths: Vec<Vec<(f64, f64)>> =
        z1.as_vec().iter().map(|&z| vec![(z as f64, 1.0)]).collect();
    let mut z = z1.clone();
    for i in (1..=steps).rev() {
        let (t, s) = (i as f64 / steps as f64, (i - 1) as f64 / steps as f64);
        let x = denoiser.denoise(&z, &Level::at(schedule, t))?;
        for k in 1..=points {
            let u = t - (t - s) * k as f64 / points as f64;
            let zu = ddim_step(schedule, x.clone(), z.clone(), t, u).as_vec();
            for (p, &v) in paths.iter_mut().zip(&zu) {
                p.push((v as f64, u));
            }
            if k == points {
                z = crate::tensor::batch_from_vec(dev, zu, rows, 1);
            }
        }
    }
    Ok(paths)
}
