//! `fewstep reproduce samplers`: FD and SW2 at matched numbers of denoiser evaluations (NFE) for
//! every integrator, with the exact Gaussian-mixture denoiser (paper Figure 3 / A.4, without
//! training error): a league table of integration error alone.

use super::builtin_set;
use super::{write_csv, write_text};
use crate::config::{field_error, ConfigBuilder};
use crate::data::builtin::make_set;
use crate::data::DataArray;
use crate::denoiser::{BuildCtx, DenoiserSpec};
use crate::integrator::{Integrator, RowNoise};
use crate::metrics::Metrics;
use crate::plot::{line_panels, Level, Panel, Series};
use crate::registry;
use crate::report::{fmt3, markdown_table};
use crate::run::evaluate::Reference;
use crate::sampling::sample;
use crate::schedule::{uniform_grid, Schedule};
use crate::tensor::{batch_from_vec, normal, seeded_device, Dev};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const QUICK: &str = include_str!("../../configs/reproduce/samplers-quick.toml");

/// The comparison's settings (a preset or a `--config` file).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct SamplersConfig {
    /// Built-in mixture sets (`fewstep data make`), one table each.
    pub datasets: Vec<String>,
    /// Exact samples of each mixture that every sampler is scored against.
    pub reference_n: usize,
    /// Samples per (integrator, steps) cell.
    pub n: usize,
    /// Seeds the reference rows, the initial noise (every cell samples the same z_1) and the
    /// per-row noise of stochastic integrators.
    pub seed: u64,
    /// Denoiser-evaluation budgets, the tables' columns: each integrator takes the most steps
    /// whose NFE fits the budget (a two-evaluation step takes about half as many).
    pub nfe: Vec<usize>,
    /// Integrators to compare; empty: every registered integrator with its defaults.
    pub integrators: Vec<Box<dyn Integrator>>,
    /// The sampling schedule.
    pub schedule: Box<dyn Schedule>,
    /// The denoiser every integrator samples with (`gmm`: the mixture's exact E[x|z_t]).
    pub denoiser: Box<dyn DenoiserSpec>,
}

/// One measured cell.
pub struct Row {
    pub dataset: String,
    pub integrator: String,
    /// The column: the NFE budget this cell was given.
    pub budget: usize,
    pub steps: usize,
    pub nfe: usize,
    pub metrics: Metrics,
}

/// Resolves a preset name or config file.
pub fn load(preset: &str, config: Option<&Path>) -> Result<SamplersConfig> {
    let base = super::preset_text("samplers", &[("quick", QUICK)], preset)?;
    let b = ConfigBuilder::from_defaults(base)?.file(config)?;
    let cfg: SamplersConfig = b.build()?;
    cfg.check().map_err(|e| b.locate(e))?;
    Ok(cfg)
}

impl SamplersConfig {
    /// Checks the sizes and every plugin's settings, before any work.
    pub fn check(&self) -> Result<()> {
        if self.nfe.contains(&0) {
            return field_error(
                "nfe",
                format!("budgets must be whole numbers >= 1, got {:?}", self.nfe),
            );
        }
        for (key, n) in [("n", self.n), ("reference_n", self.reference_n)] {
            if n == 0 {
                return field_error(key, "expected a whole number >= 1, got 0");
            }
        }
        for name in &self.datasets {
            let row = crate::data::builtin::row_bytes(name).unwrap_or(8);
            for (key, n) in [("n", self.n), ("reference_n", self.reference_n)] {
                crate::limits::check_memory(
                    &format!("`{key}` = {n} rows of {name}"),
                    n as u128 * row,
                )?;
            }
        }
        crate::config::validate_plugin!("schedule", self.schedule)?;
        crate::config::validate_plugin!("denoiser", self.denoiser)?;
        for (i, integrator) in self.integrators.iter().enumerate() {
            crate::config::validate_plugin!(&format!("integrators[{i}]"), integrator)?;
        }
        Ok(())
    }
}

/// Runs the comparison, writes `samplers.md`, `samplers.csv`, `samplers-fd.png`,
/// `samplers-sw2.png` into `out`, and returns the markdown.
pub fn run(cfg: &SamplersConfig, out: &Path) -> Result<String> {
    cfg.check()?;
    let integrators = integrator_list(cfg)?;
    let total: usize = cfg.datasets.len() * integrators.len() * cfg.nfe.iter().sum::<usize>();
    let bar = crate::progress::bar(total as u64, "samplers");
    let mut rows = Vec::new();
    let mut floors = Vec::new();
    for name in &cfg.datasets {
        let (reference, path) = reference_set(cfg, name, out)?;
        // Fresh exact samples score the floor that sampling noise alone sets.
        let fresh = make_set(name, cfg.n, cfg.seed + 2)?;
        floors.push((name.clone(), reference.score(&fresh.data)?));
        let dev = seeded_device(cfg.seed);
        let denoiser = cfg.denoiser.build(&BuildCtx {
            dev: dev.clone(),
            data: Some(path),
            checkpoint: None,
        })?;
        let dim = denoiser.dim();
        let z1 = normal(&dev, cfg.n, dim).as_vec();
        for integrator in &integrators {
            let label = integrator_label(integrator.as_ref())?;
            bar.set_message(format!("{name}/{label}"));
            for &budget in &cfg.nfe {
                let fits = |steps| -> Result<bool> {
                    let z = batch_from_vec(&dev, z1[..dim].to_vec(), 1, dim);
                    Ok(
                        run_grid(&dev, cfg, integrator.as_ref(), denoiser.as_ref(), z, steps)?.nfe
                            <= budget,
                    )
                };
                let steps = steps_within(budget, fits)
                    .with_context(|| format!("{label} with at most {budget} NFE on {name}"))?;
                let z = batch_from_vec(&dev, z1.clone(), cfg.n, dim);
                let s = run_grid(&dev, cfg, integrator.as_ref(), denoiser.as_ref(), z, steps)
                    .with_context(|| format!("{label} with {steps} steps on {name}"))?;
                let samples = DataArray::new(s.samples.as_vec(), vec![cfg.n, dim]);
                let metrics = reference.score(&samples)?;
                rows.push(Row {
                    dataset: name.clone(),
                    integrator: label.clone(),
                    budget,
                    steps,
                    nfe: s.nfe,
                    metrics,
                });
                bar.inc(budget as u64);
            }
        }
    }
    bar.finish_and_clear();
    let md = report(cfg, &rows, &floors);
    write_text(out, "samplers.md", &md)?;
    write_csv(out, "samplers.csv", &csv_rows(&rows))?;
    let full = integrators
        .iter()
        .map(|i| integrator_label(i.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<(String, String)> = full.into_iter().zip(short_labels(&integrators)?).collect();
    for (metric, panels) in panels(cfg, &rows, &floors, &names) {
        line_panels(&out.join(format!("samplers-{metric}.png")), &panels)?;
    }
    Ok(md)
}

/// `steps` uniform steps of `integrator` from `z`, per-row noise from the config's seed.
fn run_grid(
    dev: &Dev,
    cfg: &SamplersConfig,
    integrator: &dyn Integrator,
    denoiser: &dyn crate::denoiser::Denoiser,
    z: crate::tensor::Batch,
    steps: usize,
) -> Result<crate::sampling::Sampled> {
    let noise = RowNoise {
        seed: cfg.seed,
        first_row: 0,
    };
    let grid = uniform_grid(steps);
    sample(
        dev,
        cfg.schedule.as_ref(),
        integrator,
        denoiser,
        z,
        &grid,
        noise,
    )
}

/// The most steps (at most `budget`, at least 1) for which `fits(steps)` holds; NFE grows with
/// the steps, so a bisection finds it.
fn steps_within(budget: usize, mut fits: impl FnMut(usize) -> Result<bool>) -> Result<usize> {
    if fits(budget)? {
        return Ok(budget);
    }
    let (mut lo, mut hi) = (1, budget);
    if !fits(lo)? {
        bail!("even one step costs more than {budget} NFE");
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The integrators to compare: the configured list, or every registered integrator.
fn integrator_list(cfg: &SamplersConfig) -> Result<Vec<Box<dyn Integrator>>> {
    if !cfg.integrators.is_empty() {
        return cfg
            .integrators
            .iter()
            .map(crate::config::clone_plugin)
            .collect();
    }
    registry::names(registry::kind::INTEGRATOR)
        .into_iter()
        .map(|n| crate::config::plugin_from_toml(&format!("name = \"{n}\"")))
        .collect()
}

/// `name` plus the settings that differ from its defaults, e.g. `addim(eta=0.5)`.
fn integrator_label(i: &dyn Integrator) -> Result<String> {
    let table = |i: &dyn Integrator| match toml::Value::try_from(i)? {
        toml::Value::Table(t) => Ok(t),
        _ => bail!("integrator config is not a table"),
    };
    let name = i.typetag_name();
    let defaults: Box<dyn Integrator> =
        crate::config::plugin_from_toml(&format!("name = \"{name}\""))?;
    let defaults = table(defaults.as_ref())?;
    let extra: Vec<String> = table(i)?
        .iter()
        .filter(|(k, v)| *k != "name" && defaults.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Ok(if extra.is_empty() {
        name.to_string()
    } else {
        format!("{name}({})", extra.join(","))
    })
}

/// The longest plot label [`short_labels`] aims for (legend width).
const SHORT: usize = 24;

/// Plot labels: each integrator's name plus only the settings that tell it apart from the
/// others of that name (`dpm-solver++ order=3`, `unipc bh1`): a string value stands alone, a
/// number or flag keeps its key; past [`SHORT`] characters every value stands alone (`addim
/// 0.5 exact`). The tables and the CSV keep [`integrator_label`]'s full settings.
pub fn short_labels(integrators: &[Box<dyn Integrator>]) -> Result<Vec<String>> {
    let tables = integrators
        .iter()
        .map(|i| match toml::Value::try_from(i.as_ref())? {
            toml::Value::Table(t) => Ok(t),
            _ => bail!("integrator config is not a table"),
        })
        .collect::<Result<Vec<_>>>()?;
    let name = |i: usize| integrators[i].typetag_name();
    Ok((0..integrators.len())
        .map(|i| {
            let same: Vec<usize> = (0..integrators.len())
                .filter(|&j| name(j) == name(i))
                .collect();
            // Keys whose value is not the same in every integrator of this name.
            let keys = same.iter().flat_map(|&j| tables[j].keys()).filter(|k| {
                *k != "name" && same.iter().any(|&j| tables[j].get(*k) != tables[i].get(*k))
            });
            let mut keys: Vec<&String> = keys.collect();
            keys.sort();
            keys.dedup();
            let parts = |with_keys: bool| -> String {
                let mut s = name(i).to_string();
                for k in &keys {
                    s.push(' ');
                    match tables[i].get(*k) {
                        Some(toml::Value::String(v)) => s.push_str(v),
                        Some(v) if with_keys => s.push_str(&format!("{k}={v}")),
                        Some(v) => s.push_str(&v.to_string()),
                        None => s.push_str(&format!("no {k}")),
                    }
                }
                s
            };
            let long = parts(true);
            match long.chars().count() > SHORT {
                true => parts(false),
                false => long,
            }
        })
        .collect())
}

/// The reference set `out/data/NAME.h5` (made if missing), which must be a mixture.
fn reference_set(cfg: &SamplersConfig, name: &str, out: &Path) -> Result<(Reference, PathBuf)> {
    let path = out.join("data").join(format!("{name}.h5"));
    builtin_set(&path, name, cfg.reference_n, cfg.seed + 1)?;
    let reference = Reference::read(&path)?;
    if reference.mixture.is_none() {
        bail!(
            "{} has no /mixture; `reproduce samplers` needs mixture data",
            path.display()
        );
    }
    Ok((reference, path))
}

fn report(cfg: &SamplersConfig, rows: &[Row], floors: &[(String, Metrics)]) -> String {
    let mut md = String::from("# Samplers with the exact denoiser (paper Figure 3 / A.4)\n\n");
    md.push_str(&format!(
        "Exact Gaussian-mixture denoiser, `{}` schedule, uniform grid, {} samples per cell from shared noise (seed {}), \
         reference {} exact samples. Columns are denoiser evaluations (NFE) per sample: each integrator takes the most \
         steps that fit (see the last table). \"exact samples\" is the floor set by sampling noise alone.\n\n",
        cfg.schedule.typetag_name(),
        cfg.n,
        cfg.seed,
        cfg.reference_n
    ));
    for (metric, pick) in [
        ("FD", (|m: &Metrics| m.fd) as fn(&Metrics) -> f64),
        // Every dataset here is a mixture (the exact denoiser needs one).
        ("FD to the exact mixture moments", |m: &Metrics| {
            m.fd_exact.unwrap_or(f64::NAN)
        }),
        ("SW2", |m: &Metrics| m.sw2),
    ] {
        for (name, floor) in floors {
            md.push_str(&format!(
                "## {metric} on {name} (lower is better; columns are NFE)\n\n"
            ));
            let mut header = vec!["integrator".to_string()];
            header.extend(cfg.nfe.iter().map(|s| s.to_string()));
            let mut table = budget_table(cfg, rows, name, |r| fmt3(pick(&r.metrics)));
            let mut floor_line = vec!["exact samples".to_string(), fmt3(pick(floor))];
            floor_line.extend(cfg.nfe.iter().skip(1).map(|_| String::new()));
            table.push(floor_line);
            md.push_str(&markdown_table(&header, &table));
            md.push('\n');
        }
    }
    if let Some((first, _)) = floors.first() {
        md.push_str("## Steps taken within each NFE budget (NFE used)\n\n");
        let mut header = vec!["integrator".to_string()];
        header.extend(cfg.nfe.iter().map(|s| s.to_string()));
        let table = budget_table(cfg, rows, first, |r| format!("{} ({})", r.steps, r.nfe));
        md.push_str(&markdown_table(&header, &table));
    }
    md
}

/// The integrators measured on `dataset`, in run order.
fn integrator_labels<'a>(rows: &'a [Row], dataset: &str) -> Vec<&'a str> {
    let mut labels: Vec<&str> = rows
        .iter()
        .filter(|r| r.dataset == dataset)
        .map(|r| r.integrator.as_str())
        .collect();
    labels.dedup();
    labels
}

/// One line per integrator, one cell per NFE budget, each cell `cell(row)`.
fn budget_table(
    cfg: &SamplersConfig,
    rows: &[Row],
    dataset: &str,
    cell: impl Fn(&Row) -> String,
) -> Vec<Vec<String>> {
    integrator_labels(rows, dataset)
        .into_iter()
        .map(|label| {
            let mut line = vec![format!("`{label}`")];
            line.extend(cfg.nfe.iter().map(|&b| {
                rows.iter()
                    .find(|r| r.dataset == dataset && r.integrator == label && r.budget == b)
                    .map(&cell)
                    .unwrap_or_default()
            }));
            line
        })
        .collect()
}

/// One record of `samplers.csv`.
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    dataset: &'a str,
    integrator: &'a str,
    steps: usize,
    nfe: usize,
    fd: f64,
    fd_exact: Option<f64>,
    sw2: f64,
    nll: Option<f64>,
    mode_kl: Option<f64>,
}

fn csv_rows(rows: &[Row]) -> Vec<CsvRow<'_>> {
    rows.iter()
        .map(|r| CsvRow {
            dataset: &r.dataset,
            integrator: &r.integrator,
            steps: r.steps,
            nfe: r.nfe,
            fd: r.metrics.fd,
            fd_exact: r.metrics.fd_exact,
            sw2: r.metrics.sw2,
            nll: r.metrics.nll,
            mode_kl: r.metrics.mode_kl,
        })
        .collect()
}

/// The FD and SW2 figures: one panel per dataset, a line per integrator (its short label,
/// from `names`: full label -> short label) against the NFE it used, the axis ticked at the
/// budgets, and the floor of fresh exact samples as a dashed level.
fn panels(
    cfg: &SamplersConfig,
    rows: &[Row],
    floors: &[(String, Metrics)],
    names: &[(String, String)],
) -> Vec<(&'static str, Vec<Panel>)> {
    let short = |full: &str| {
        names
            .iter()
            .find(|n| n.0 == full)
            .map_or(full.to_string(), |n| n.1.clone())
    };
    [
        ("fd", (|m: &Metrics| m.fd) as fn(&Metrics) -> f64),
        ("sw2", |m: &Metrics| m.sw2),
    ]
    .into_iter()
    .map(|(metric, pick)| {
        let panels = cfg
            .datasets
            .iter()
            .map(|name| Panel {
                title: format!("{} on {name}", metric.to_uppercase()),
                x_label: "NFE".into(),
                y_label: metric.to_uppercase(),
                log_x: true,
                log_y: true,
                x_ticks: Some(cfg.nfe.iter().map(|&b| b as f64).collect()),
                series: integrator_labels(rows, name)
                    .into_iter()
                    .map(|l| Series {
                        label: short(l),
                        points: rows
                            .iter()
                            .filter(|r| &r.dataset == name && r.integrator == l)
                            .map(|r| (r.nfe as f64, pick(&r.metrics)))
                            .collect(),
                    })
                    .collect(),
                levels: floors
                    .iter()
                    .filter(|f| &f.0 == name)
                    .map(|f| Level {
                        label: "floor".into(),
                        y: pick(&f.1),
                    })
                    .collect(),
            })
            .collect();
        (metric, panels)
    })
    .collect()
}
