//! `fewstep reproduce figure1`: sampling trajectories of 1-, 2- and 4-step consistency models
//! on the 1-D two-modes mixture beside DDIM with the exact denoiser (the "infinite-step" panel),
//! as the paper's Figure 1. The students are real: trained and scored by the table machinery of
//! [`super::distill`], then each is drawn as the DDIM lines its predictions imply inside every
//! segment (the integrator's step to points inside the segment), t = 0 (data) on top.

use super::distill::{self, Presets, TableConfig};
use crate::config::{clone_plugin, ConfigBuilder, FieldError, Overrides};
use crate::denoiser::DenoiserSpec;
use crate::plot::{path_panels, PathPanel};
use crate::run::sample::{trajectories, SampleConfig};
use anyhow::{bail, Context, Result};
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
    let b = ConfigBuilder::from_defaults(base)?.file(config)?;
    let mut cfg: Figure1Config = b.build()?;
    distill::scale_config(&mut cfg.table, scale)?;
    distill::check_sizes(&cfg.table).map_err(|e| b.locate(e))?;
    for (key, v) in [
        ("trajectories", cfg.trajectories),
        ("points_per_segment", cfg.points_per_segment),
        ("exact_steps", cfg.exact_steps),
    ] {
        if v == 0 {
            return Err(
                b.locate(FieldError::new(key, "expected a whole number >= 1, got 0").into())
            );
        }
    }
    cfg.exact_denoiser.validate().with_context(|| {
        format!(
            "in `exact_denoiser` ({})",
            cfg.exact_denoiser.typetag_name()
        )
    })?;
    Ok(cfg)
}

/// Trains and scores the students, then writes `figure1.png` beside the table's files.
pub fn run(cfg: &Figure1Config, out: &Path) -> Result<String> {
    let t = &cfg.table;
    let (Some(dataset), Some(method)) = (t.datasets.first(), t.methods.first()) else {
        bail!("figure1 needs a dataset and a method in its [table]");
    };
    let md = distill::run("figure1", t, out)?;
    // Every panel samples the same z_1: `trajectories` rows from the table's seed.
    let overrides = Overrides::default()
        .set("n", Some(cfg.trajectories as i64))
        .set("seed", Some(t.seed as i64));
    let mut panels = Vec::new();
    let mut student_schedule = None;
    for &steps in &t.student_steps {
        let run = distill::student_dir(out, dataset, &method.label, steps);
        // A student samples as Algorithm 2 does: DDIM on its own S-step grid.
        let sc = SampleConfig::resolve(None, &overrides.clone().path("checkpoint", Some(&run)))?;
        if sc.steps != steps {
            bail!("{} is not a {steps}-step student", run.display());
        }
        panels.push(PathPanel {
            title: format!("{steps}-step {}", method.label),
            x_label: "z".into(),
            y_label: "t".into(),
            paths: trajectories(&sc, cfg.points_per_segment)
                .with_context(|| format!("trajectories of {}", run.display()))?,
        });
        student_schedule.get_or_insert(sc.schedule);
    }
    // The right-hand panel: the exact denoiser with many DDIM steps, on the first student's
    // schedule.
    let data = distill::data_path(out, dataset);
    let mut exact = SampleConfig::resolve(
        None,
        &overrides
            .set("steps", Some(cfg.exact_steps as i64))
            .path("data", Some(&data)),
    )?;
    exact.denoiser = clone_plugin(&cfg.exact_denoiser)?;
    if let Some(schedule) = student_schedule {
        exact.schedule = schedule;
    }
    panels.push(PathPanel {
        title: format!("DDIM, {} steps", cfg.exact_steps),
        x_label: "z".into(),
        y_label: "t".into(),
        paths: trajectories(&exact, 1)?,
    });
    path_panels(&out.join("figure1.png"), &panels)?;
    Ok(md)
}
