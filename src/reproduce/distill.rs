//! `fewstep reproduce table3|table4`: a teacher trained once per dataset, then one student per
//! (method, student steps) cell distilled from it, sampled with Algorithm 2 and scored with
//! `fewstep eval`'s metrics. Which methods and baselines a table has is data (the preset's
//! TOML), so Table 3 (PD vs CT vs CD) and Table 4 (DDIM vs aDDIM teacher) share this code.
//!
//! Every run folder is kept under `--out`: a finished teacher or student is reused, an
//! unfinished one is resumed, so an interrupted reproduction continues where it stopped.

use super::{builtin_set, preset_text, write_csv, write_text};
use crate::checkpoint;
use crate::config::{clone_plugin, field_error, ConfigBuilder, Overrides};
use crate::data::{read_data, DataArray};
use crate::integrator::Integrator;
use crate::metrics::Metrics;
use crate::plot::{line_panels, Level, Panel, Series};
use crate::report::{fmt3, markdown_table};
use crate::run::evaluate::Reference;
use crate::run::sample::{sample, SampleConfig};
use crate::run::{distill, train as run_train};
use crate::train::identity::Identity;
use crate::train::{LogLine, TrainConfig};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use toml::{Table, Value};

/// Settings layered over a command's defaults (a TOML table).
type Settings = Table;

/// A distillation table's settings (a preset or a `--config` file on top of one).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Heading of the markdown report.
    pub title: String,
    /// What the paper reports for this table, quoted under ours.
    #[serde(default)]
    pub paper: String,
    /// Built-in mixture sets (`fewstep data make`), one table each.
    pub datasets: Vec<String>,
    /// Training rows made per dataset.
    pub data_n: usize,
    /// Exact reference rows per dataset (a different seed from the training rows).
    pub reference_n: usize,
    /// Samples per evaluated cell.
    pub n: usize,
    /// Seeds data, training and sampling noise (every cell samples the same z_1).
    pub seed: u64,
    /// Repeats the whole table with seeds `seed`, `seed + 1`, ... (each in `seed-<s>/` under
    /// `--out`) and reports mean +- standard deviation over them.
    #[serde(default = "one_seed", deserialize_with = "crate::config::at_least_one")]
    pub seeds: usize,
    /// Student steps S, the table's rows.
    pub student_steps: Vec<usize>,
    /// `fewstep train` settings of the teacher (over configs/train.toml).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub teacher: Settings,
    /// `fewstep distill` settings of every student (over configs/distill.toml).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub student: Settings,
    /// The table's columns: one distillation method each.
    pub methods: Vec<Method>,
    /// Reference rows: the teacher itself sampled with an integrator.
    #[serde(default)]
    pub baselines: Vec<Baseline>,
    /// Multiplies the length of every run as it is resolved: `steps`, `checkpoint_every` and
    /// the objective's iteration counts (annealing, round lengths; each objective scales its
    /// own). `--scale` multiplies it further; > 0 and at most 1000, alone and together.
    #[serde(default = "unit_scale", deserialize_with = "scale_factor")]
    pub scale: f64,
}

/// `deserialize_with` check of `scale`, so the error names the config file and key.
fn scale_factor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let s = <f64 as serde::Deserialize>::deserialize(d)?;
    match scale_problem(s) {
        None => Ok(s),
        Some(problem) => Err(serde::de::Error::custom(problem)),
    }
}

fn unit_scale() -> f64 {
    1.0
}

fn one_seed() -> usize {
    1
}

/// One column: a label and the `[objective]` table (its `student_steps` is set per row).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// Column heading (and run folder name).
    pub label: String,
    /// The student's `[objective]` table (over configs/distill.toml's).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub objective: Settings,
    /// Student settings of this method only (over the table's `student`).
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub student: Settings,
}

/// A row below the table: the teacher sampled with `integrator` at `steps`.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Row label.
    pub label: String,
    /// The sampler the teacher is run with.
    pub integrator: Box<dyn Integrator>,
    /// Its sampling steps.
    pub steps: usize,
}

/// The row label of fresh exact samples (the noise floor).
const EXACT: &str = "exact samples (noise floor)";

/// One measured cell.
pub struct Cell {
    pub seed: u64,
    pub dataset: String,
    pub method: String,
    pub steps: usize,
    pub metrics: Metrics,
    pub train_s: f64,
}

/// Presets as (name, TOML) pairs; `load` layers `--config` on the chosen one.
pub type Presets = &'static [(&'static str, &'static str)];

/// Resolves a preset and an optional override file, then applies `scale`.
pub fn load(
    what: &str,
    presets: Presets,
    preset: &str,
    config: Option<&Path>,
    scale: f64,
) -> Result<TableConfig> {
    let base = preset_text(what, presets, preset)?;
    let b = ConfigBuilder::from_defaults(base)?.file(config)?;
    let mut cfg: TableConfig = b.build()?;
    scale_config(&mut cfg, scale)?;
    check_sizes(&cfg).map_err(|e| b.locate(e))?;
    Ok(cfg)
}

/// What is wrong with a table's dataset list (none, or a name that is no built-in dataset), or
/// `None`.
pub fn dataset_problem(names: &[String]) -> Option<String> {
    let valid: Vec<&str> = crate::data::builtin::SETS.iter().map(|s| s.0).collect();
    match names.iter().find(|n| !valid.contains(&n.as_str())) {
        _ if names.is_empty() => Some("expected at least one built-in dataset, got none".into()),
        Some(name) => Some(format!(
            "unknown built-in dataset `{name}`; valid names: {}",
            valid.join(", ")
        )),
        None => None,
    }
}

/// Refuses row counts the machine's memory cannot hold (the sets are made in memory).
pub fn check_sizes(cfg: &TableConfig) -> Result<()> {
    if cfg.student_steps.contains(&0) {
        return field_error(
            "student_steps",
            format!("expected whole numbers >= 1, got {:?}", cfg.student_steps),
        );
    }
    if let Some(problem) = dataset_problem(&cfg.datasets) {
        return field_error("datasets", problem);
    }
    for name in &cfg.datasets {
        let row = crate::data::builtin::row_bytes(name)
            .expect("dataset_problem above refused every name that is not a built-in set");
        for (key, n) in [
            ("data_n", cfg.data_n),
            ("reference_n", cfg.reference_n),
            ("n", cfg.n),
        ] {
            if n == 0 {
                return field_error(key, "expected a whole number >= 1, got 0");
            }
            crate::limits::check_memory(&format!("`{key}` = {n} rows of {name}"), n as u128 * row)?;
        }
    }
    Ok(())
}

/// The largest length factor, `--scale` and a config's `scale` together: 1000 times a
/// preset's runs (the paper preset's 200,000 iterations become 2 x 10^8) is far past any run
/// this engine is meant for, and larger factors overflow step counts (1e30 saturates u64).
pub const MAX_SCALE: f64 = 1000.0;

/// Why `s` is no length factor, if it is none: the valid range is (0, [`MAX_SCALE`]].
pub fn scale_problem(s: f64) -> Option<String> {
    (!(s > 0.0 && s <= MAX_SCALE)).then(|| {
        format!(
            "expected a number > 0 and <= {MAX_SCALE} (a factor on every run's length), got {s}"
        )
    })
}

/// Multiplies the length of every run by `scale` (`--scale`).
pub fn scale_config(cfg: &mut TableConfig, scale: f64) -> Result<()> {
    for (what, s) in [
        ("--scale", scale),
        ("`scale`", cfg.scale),
        ("`scale` x --scale", cfg.scale * scale),
    ] {
        if let Some(problem) = scale_problem(s) {
            bail!("{what}: {problem}");
        }
    }
    cfg.scale *= scale;
    Ok(())
}

/// Every run of `dataset` as `run` trains it, resolved and scaled: the teacher first, then each
/// method's students in order of S.
pub fn run_configs(cfg: &TableConfig, out: &Path, dataset: &str) -> Result<Vec<TrainConfig>> {
    let paths = Paths::new(out, dataset);
    let mut all = vec![teacher_config(cfg, &paths)?];
    for m in &cfg.methods {
        for &s in &cfg.student_steps {
            all.push(student_config(cfg, &paths, m, s)?);
        }
    }
    Ok(all)
}

/// Runs every cell for each seed, writes `<what>.md`, `<what>.csv` and `<what>-fd.png` to
/// `out`, returns the markdown.
pub fn run(what: &str, cfg: &TableConfig, out: &Path) -> Result<String> {
    let seeded: Vec<(TableConfig, PathBuf)> = (0..cfg.seeds as u64)
        .map(|k| {
            let mut c = clone_table(cfg)?;
            c.seed = cfg.seed + k;
            let dir = match cfg.seeds {
                1 => out.to_path_buf(),
                _ => out.join(format!("seed-{}", c.seed)),
            };
            Ok((c, dir))
        })
        .collect::<Result<_>>()?;
    // Resolve every run's config before the first long job, so a typo fails in a second, and
    // refuse before any work to reuse a run that was trained with another config.
    for (c, dir) in &seeded {
        for name in &c.datasets {
            for run in run_configs(c, dir, name)? {
                if run.data.exists() {
                    run_train::check_reusable(&run)?;
                }
            }
        }
    }
    let mut cells = Vec::new();
    for (c, dir) in &seeded {
        if cfg.seeds > 1 {
            eprintln!(
                "seed {} of {}: {}",
                c.seed - cfg.seed + 1,
                cfg.seeds,
                dir.display()
            );
        }
        cells.extend(run_seed(c, dir)?);
    }
    let md = report(cfg, &cells);
    write_text(out, &format!("{what}.md"), &md)?;
    write_csv(out, &format!("{what}.csv"), &csv_rows(&cells))?;
    plot(&out.join(format!("{what}-fd.png")), cfg, &cells)?;
    Ok(md)
}

/// A copy of a table config (its plugins are cloned through their TOML).
fn clone_table(cfg: &TableConfig) -> Result<TableConfig> {
    Ok(toml::from_str(&crate::config::to_toml(cfg)?)?)
}

/// Every cell of one seed's table, its runs under `out`.
fn run_seed(cfg: &TableConfig, out: &Path) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    let total = cfg.datasets.len() * (1 + cfg.methods.len() * cfg.student_steps.len());
    let mut done = 0;
    let clock = Instant::now();
    let mut note = |what: &str| {
        done += 1;
        eprintln!(
            "[{done}/{total}, {:.0} s] {what}",
            clock.elapsed().as_secs_f64()
        );
    };
    for name in &cfg.datasets {
        let paths = Paths::new(out, name);
        builtin_set(&paths.data, name, cfg.data_n, cfg.seed)?;
        builtin_set(&paths.reference, name, cfg.reference_n, cfg.seed + 1)?;
        let reference = Reference::read(&paths.reference)?;
        // Fresh exact samples score the floor that sampling noise alone sets.
        let exact = crate::data::builtin::make_set(name, cfg.n, cfg.seed + 2)?.data;
        cells.push(Cell {
            seed: cfg.seed,
            dataset: name.clone(),
            method: EXACT.into(),
            steps: 0,
            metrics: reference.score(&exact)?,
            train_s: 0.0,
        });

        let t0 = Instant::now();
        let teacher = teacher_config(cfg, &paths)?;
        finish_run(&teacher, "teacher")?;
        note(&format!(
            "{name}: teacher ready ({:.0} s)",
            t0.elapsed().as_secs_f64()
        ));
        for b in &cfg.baselines {
            let samples = sample_run(cfg, &paths, &paths.teacher, Some(b), &b.label)?;
            let metrics = reference.score(&samples)?;
            cells.push(Cell {
                seed: cfg.seed,
                dataset: name.clone(),
                method: b.label.clone(),
                steps: b.steps,
                metrics,
                train_s: 0.0,
            });
        }
        for m in &cfg.methods {
            for &s in &cfg.student_steps {
                let student = student_config(cfg, &paths, m, s)?;
                let what = format!("{} S={s}", m.label);
                if let Some(twin) = link_twin(&student, &paths.root)? {
                    eprintln!("{what}: the same run as {}, linked", twin.display());
                }
                finish_run(&student, &what)?;
                let train_s = logged_seconds(&student.out)?;
                let samples = sample_run(cfg, &paths, &student.out, None, &slug(&m.label, s))?;
                let metrics = reference.score(&samples)?;
                note(&format!(
                    "{name}: {} with {s} steps: FD {} ({train_s:.0} s)",
                    m.label,
                    fmt3(metrics.fd)
                ));
                cells.push(Cell {
                    seed: cfg.seed,
                    dataset: name.clone(),
                    method: m.label.clone(),
                    steps: s,
                    metrics,
                    train_s,
                });
            }
        }
    }
    Ok(cells)
}

/// Where one dataset's files live under `out`.
struct Paths {
    root: PathBuf,
    data: PathBuf,
    reference: PathBuf,
    teacher: PathBuf,
}

impl Paths {
    fn new(out: &Path, dataset: &str) -> Self {
        let root = out.join(dataset);
        Paths {
            data: out.join("data").join(format!("{dataset}.h5")),
            reference: out.join("data").join(format!("{dataset}-reference.h5")),
            teacher: root.join("teacher"),
            root,
        }
    }
}

/// The run folder of `label`'s student with `steps` steps on `dataset` under `out`.
pub fn student_dir(out: &Path, dataset: &str, label: &str, steps: usize) -> PathBuf {
    Paths::new(out, dataset).root.join(slug(label, steps))
}

/// The training set of `dataset` under `out`.
pub fn data_path(out: &Path, dataset: &str) -> PathBuf {
    Paths::new(out, dataset).data
}

/// `cd-s4` for label "CD" and 4 steps: the run folder and samples file of a cell.
fn slug(label: &str, steps: usize) -> String {
    let base: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{}-s{steps}", base.trim_matches('-'))
}

fn with_table(mut b: ConfigBuilder, t: &Table) -> ConfigBuilder {
    for (k, v) in t {
        b = b.set(k, Some(v.clone()));
    }
    b
}

fn path_value(p: &Path) -> Option<Value> {
    Some(Value::String(p.display().to_string()))
}

fn teacher_config(cfg: &TableConfig, paths: &Paths) -> Result<TrainConfig> {
    let mut c: TrainConfig = with_table(
        ConfigBuilder::from_defaults(run_train::DEFAULTS)?,
        &cfg.teacher,
    )
    .set("data", path_value(&paths.data))
    .set("out", path_value(&paths.teacher))
    .set("seed", Some(cfg.seed as i64))
    .build()
    .context("the preset's [teacher] table")?;
    c.scale_length(cfg.scale);
    c.check().context("the preset's [teacher] table")?;
    Ok(c)
}

/// The student of method `m` with `steps` student steps, resolved and scaled: distill defaults,
/// the table's and the method's student settings, the objective, then what the teacher
/// checkpoint implies; S is set through the objective.
fn student_config(
    cfg: &TableConfig,
    paths: &Paths,
    m: &Method,
    steps: usize,
) -> Result<TrainConfig> {
    let b = with_table(
        ConfigBuilder::from_defaults(distill::DEFAULTS)?,
        &cfg.student,
    );
    let b = with_table(b, &m.student)
        .set("objective", Some(Value::Table(m.objective.clone())))
        .set("data", path_value(&paths.data))
        .set("out", path_value(&paths.root.join(slug(&m.label, steps))))
        .set("seed", Some(cfg.seed as i64));
    // A method may be taught by a denoiser plugin (`[teacher_denoiser]`); its student still
    // starts from the trained teacher's weights.
    let b = match b.table().contains_key("teacher_denoiser") {
        true => b,
        false => b.set("teacher", path_value(&paths.teacher)),
    };
    // The student is the teacher's network; before the teacher exists, resolve against the
    // teacher's config instead of its checkpoint.
    let b = match checkpoint::latest(&paths.teacher) {
        Ok(_) => distill::from_teacher(b, &paths.teacher)?,
        Err(_) => {
            let teacher = teacher_config(cfg, paths)?;
            b.set("denoiser", Some(Value::try_from(&teacher.denoiser)?))
        }
    };
    let what = || format!("the student of method `{}` with {steps} steps", m.label);
    let mut c: TrainConfig = b.build().with_context(what)?;
    c.objective.set_student_steps(steps).with_context(what)?;
    c.scale_length(cfg.scale);
    c.check().with_context(what)?;
    c.check_reaches_last_round().with_context(what)?;
    Ok(c)
}

/// Trains `cfg` to its last step: reuses a finished run, resumes an unfinished one.
fn finish_run(cfg: &TrainConfig, what: &str) -> Result<()> {
    let done = run_train::finish(cfg)
        .with_context(|| format!("training {what} in {}", cfg.out.display()))?;
    if done.is_none() {
        let step = checkpoint::list(&cfg.out)?.last().map_or(0, |(s, _)| *s);
        eprintln!("{what}: reusing {} (step {step})", cfg.out.display());
    }
    Ok(())
}

/// Links `cfg.out` to a finished run with `cfg`'s identity in another folder under `root` (the
/// same dataset's runs), and returns that folder: a student that two methods or two tables share
/// (table2's annealed CD is table3's CD) then trains once. The link is relative, so `--out` can
/// be moved. `None` when `cfg.out` exists already or no such run is there.
fn link_twin(cfg: &TrainConfig, root: &Path) -> Result<Option<PathBuf>> {
    if cfg.out.symlink_metadata().is_ok() || !root.is_dir() {
        return Ok(None);
    }
    let identity = Identity::of(cfg)?;
    // Real folders only: a link always names the run that was trained.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Some((step, ckpt)) = checkpoint::list(&dir).ok().and_then(|mut l| l.pop()) else {
            continue;
        };
        let finished_twin = step >= cfg.steps
            && checkpoint::load(&ckpt, &[]).is_ok_and(|c| identity.recorded_in(&c.meta));
        if let (true, Some(name)) = (finished_twin, dir.file_name()) {
            std::os::unix::fs::symlink(name, &cfg.out)
                .with_context(|| format!("linking {} to {}", cfg.out.display(), dir.display()))?;
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

/// The training time `log.jsonl` records for a finished run (of its last start), so a reused
/// run reports what it cost when it was trained.
fn logged_seconds(run: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(run.join("log.jsonl")).unwrap_or_default();
    Ok(text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<LogLine>(l).ok())
        .map_or(0.0, |l| l.elapsed_s))
}

/// Samples the checkpoint in `run` (a student by its own defaults, or with `baseline`'s
/// integrator and steps) into `root/samples/<name>.h5`.
fn sample_run(
    cfg: &TableConfig,
    paths: &Paths,
    run: &Path,
    baseline: Option<&Baseline>,
    name: &str,
) -> Result<DataArray> {
    let overrides = Overrides::default()
        .path("checkpoint", Some(run))
        .set("n", Some(cfg.n as i64))
        .set("seed", Some(cfg.seed as i64))
        .set("steps", baseline.map(|b| b.steps as i64))
        .path("data", Some(&paths.data))
        .path(
            "out",
            Some(&paths.root.join("samples").join(format!("{name}.h5"))),
        );
    let mut sc = SampleConfig::resolve(None, &overrides)?;
    if let Some(b) = baseline {
        sc.integrator = clone_plugin(&b.integrator)?;
    }
    if let Some(done) = earlier_samples(&sc)? {
        return Ok(done);
    }
    std::fs::create_dir_all(paths.root.join("samples"))?;
    Ok(sample(&sc)?.samples)
}

/// The samples already at `sc.out` when they were drawn with the same config from the same
/// checkpoint step, after that checkpoint was written (a rerun then costs nothing).
fn earlier_samples(sc: &SampleConfig) -> Result<Option<DataArray>> {
    let (Ok(file), Some(ck)) = (hdf5::File::open(&sc.out), &sc.checkpoint) else {
        return Ok(None);
    };
    let attr = |name| {
        file.dataset("data")
            .ok()
            // An unreadable attribute only means the samples are drawn again.
            .and_then(|d| crate::data::h5::read_str_attr(&d, name).ok().flatten())
    };
    let ck = checkpoint::resolve(ck)?;
    let step = checkpoint::load(&ck, &[])?.meta.step;
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let same = attr("config") == Some(crate::config::to_toml(sc)?)
        && attr("checkpoint_step") == Some(step.to_string())
        && modified(&ck) <= modified(&sc.out);
    Ok(match same {
        true => Some(read_data(&sc.out)?),
        false => None,
    })
}

/// Reads one metric of a cell (`None` where the data has no mixture).
type Pick = fn(&Metrics) -> Option<f64>;

fn report(cfg: &TableConfig, cells: &[Cell]) -> String {
    let mut md = format!("# {}\n\n", cfg.title);
    let seeds = match cfg.seeds {
        1 => format!("seed {}", cfg.seed),
        k => format!(
            "seeds {}..={}; each number is the mean +- standard deviation over the {k} seeds, \
             each seed with its own data, teacher, students and noise. **Bold**: the best in its \
             row by more than the spread (the best mean plus its standard deviation below the \
             runner-up's mean minus its own); no bold where the spreads overlap",
            cfg.seed,
            cfg.seed + k as u64 - 1
        ),
    };
    md.push_str(&format!(
        "Teacher: `fewstep train` on {} rows; students distilled from it and sampled with DDIM on \
         their own S-step grid (Algorithm 2); {} samples per cell from the same noise ({seeds}), \
         scored against {} exact reference samples.\n\n",
        cfg.data_n, cfg.n, cfg.reference_n
    ));
    for name in &cfg.datasets {
        let here: Vec<&Cell> = cells.iter().filter(|c| &c.dataset == name).collect();
        let mut metrics: Vec<(&str, Pick)> = vec![("FD", |m| Some(m.fd))];
        let mixture = here.iter().any(|c| c.metrics.nll.is_some());
        if mixture {
            metrics.push(("FD to the exact mixture moments", |m| m.fd_exact));
        }
        metrics.push(("SW2", |m| Some(m.sw2)));
        if mixture {
            metrics.push(("NLL", |m| m.nll));
            metrics.push(("mode KL", |m| m.mode_kl));
        }
        for (metric, pick) in metrics {
            md.push_str(&format!("## {metric} on {name} (lower is better)\n\n"));
            let mut header = vec!["Student steps".to_string()];
            header.extend(cfg.methods.iter().map(|m| m.label.clone()));
            // One value per seed.
            let values = |method: &str, s: usize| -> Vec<f64> {
                here.iter()
                    .filter(|c| c.method == method && c.steps == s)
                    .filter_map(|c| pick(&c.metrics))
                    .collect()
            };
            let mut rows: Vec<Vec<String>> = cfg
                .student_steps
                .iter()
                .map(|&s| {
                    let row: Vec<Vec<f64>> =
                        cfg.methods.iter().map(|m| values(&m.label, s)).collect();
                    let best = clear_best(&row);
                    let mut r = vec![s.to_string()];
                    r.extend(row.iter().enumerate().map(|(i, v)| match best == Some(i) {
                        true => format!("**{}**", with_spread(v)),
                        false => with_spread(v),
                    }));
                    r
                })
                .collect();
            let fixed = cfg
                .baselines
                .iter()
                .map(|b| {
                    (
                        format!("{} ({} steps)", b.label, b.steps),
                        with_spread(&values(&b.label, b.steps)),
                    )
                })
                .chain([(EXACT.to_string(), with_spread(&values(EXACT, 0)))]);
            for (label, v) in fixed {
                let mut r = vec![label];
                r.extend(cfg.methods.iter().map(|_| v.clone()));
                rows.push(r);
            }
            md.push_str(&markdown_table(&header, &rows));
            md.push('\n');
        }
        let train_s: f64 = here.iter().map(|c| c.train_s).sum();
        let over = match cfg.seeds {
            1 => String::new(),
            k => format!(" over {k} seeds"),
        };
        md.push_str(&format!(
            "Student training on {name}: {train_s:.0} s in all{over}.\n\n"
        ));
    }
    if !cfg.paper.is_empty() {
        md.push_str(&format!("## The paper\n\n{}\n", cfg.paper.trim()));
    }
    md
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = match v.len() {
        0 | 1 => 0.0,
        _ => v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0),
    };
    (mean, var.sqrt())
}

/// One value as [`fmt3`] prints it, several as `mean ± std`; nothing for none.
fn with_spread(v: &[f64]) -> String {
    match v.len() {
        0 => String::new(),
        1 => fmt3(v[0]),
        _ => {
            let (m, s) = mean_std(v);
            format!("{} ± {}", fmt3(m), fmt3(s))
        }
    }
}

/// The column whose mean is lowest by more than the spread: its mean plus its standard deviation
/// below the runner-up's mean minus the runner-up's. `None` with one seed (no spread to compare
/// against), fewer than two columns, or overlapping spreads.
fn clear_best(row: &[Vec<f64>]) -> Option<usize> {
    let mut stats: Vec<(usize, f64, f64)> = row
        .iter()
        .enumerate()
        .filter(|(_, v)| v.len() > 1)
        .map(|(i, v)| {
            let (m, s) = mean_std(v);
            (i, m, s)
        })
        .collect();
    if stats.len() < 2 {
        return None;
    }
    stats.sort_by(|a, b| a.1.total_cmp(&b.1));
    let ((i, m1, s1), (_, m2, s2)) = (stats[0], stats[1]);
    (m1 + s1 < m2 - s2).then_some(i)
}

/// One record of a distillation table's CSV (one per seed).
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    seed: u64,
    dataset: &'a str,
    method: &'a str,
    steps: usize,
    fd: f64,
    fd_exact: Option<f64>,
    sw2: f64,
    nll: Option<f64>,
    mode_kl: Option<f64>,
    /// Training seconds to one decimal, as the markdown table shows them.
    train_s: String,
}

fn csv_rows(cells: &[Cell]) -> Vec<CsvRow<'_>> {
    cells
        .iter()
        .map(|c| CsvRow {
            seed: c.seed,
            dataset: &c.dataset,
            method: &c.method,
            steps: c.steps,
            fd: c.metrics.fd,
            fd_exact: c.metrics.fd_exact,
            sw2: c.metrics.sw2,
            nll: c.metrics.nll,
            mode_kl: c.metrics.mode_kl,
            train_s: format!("{:.1}", c.train_s),
        })
        .collect()
}

/// Mean FD against student steps (over the seeds), one line per method; the baselines and
/// the noise floor as dashed levels.
fn plot(path: &Path, cfg: &TableConfig, cells: &[Cell]) -> Result<()> {
    line_panels(path, &fd_panels(cfg, cells)).map(drop)
}

/// One FD panel per dataset, its step axis ticked at the table's student steps.
fn fd_panels(cfg: &TableConfig, cells: &[Cell]) -> Vec<Panel> {
    let mean_fd = |name: &str, method: &str, steps: usize| {
        let v: Vec<f64> = cells
            .iter()
            .filter(|c| c.dataset == name && c.method == method && c.steps == steps)
            .map(|c| c.metrics.fd)
            .collect();
        (!v.is_empty()).then(|| mean_std(&v).0)
    };
    cfg.datasets
        .iter()
        .map(|name| {
            let series = cfg
                .methods
                .iter()
                .map(|m| Series {
                    label: m.label.clone(),
                    points: cfg
                        .student_steps
                        .iter()
                        .filter_map(|&s| mean_fd(name, &m.label, s).map(|fd| (s as f64, fd)))
                        .collect(),
                })
                .collect();
            let fixed = cfg
                .baselines
                .iter()
                .map(|b| {
                    (
                        b.label.as_str(),
                        b.steps,
                        format!("{} ({} steps)", b.label, b.steps),
                    )
                })
                .chain([(EXACT, 0, EXACT.to_string())]);
            let levels = fixed
                .filter_map(|(method, steps, label)| {
                    mean_fd(name, method, steps).map(|y| Level { label, y })
                })
                .collect();
            Panel {
                title: format!("FD on {name}"),
                x_label: "student steps".into(),
                y_label: "FD".into(),
                series,
                levels,
                x_ticks: Some(cfg.student_steps.iter().map(|&s| s as f64).collect()),
                log_x: true,
                log_y: true,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_plot_ticks_at_the_student_steps_with_baselines_as_levels() {
        let cfg = load("table3", crate::reproduce::TABLE3, "quick", None, 1.0).unwrap();
        let cell = |method: &str, steps: usize, fd: f64| Cell {
            seed: cfg.seed,
            dataset: cfg.datasets[0].clone(),
            method: method.into(),
            steps,
            metrics: Metrics {
                fd,
                fd_exact: None,
                sw2: fd,
                nll: None,
                mode_kl: None,
            },
            train_s: 0.0,
        };
        let mut cells = vec![cell(EXACT, 0, 0.001)];
        cells.extend(cfg.baselines.iter().map(|b| cell(&b.label, b.steps, 0.01)));
        for m in &cfg.methods {
            cells.extend(
                cfg.student_steps
                    .iter()
                    .map(|&s| cell(&m.label, s, 1.0 / s as f64)),
            );
        }
        let panels = fd_panels(&cfg, &cells);
        assert_eq!(panels.len(), cfg.datasets.len());
        let p = &panels[0];
        let steps: Vec<f64> = cfg.student_steps.iter().map(|&s| s as f64).collect();
        assert_eq!(p.x_ticks.as_deref(), Some(&steps[..]));
        assert!(p.log_x && p.log_y);
        let lines: Vec<&str> = p.series.iter().map(|s| s.label.as_str()).collect();
        let methods: Vec<&str> = cfg.methods.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(lines, methods);
        for s in &p.series {
            let xs: Vec<f64> = s.points.iter().map(|q| q.0).collect();
            assert_eq!(xs, steps);
        }
        let levels: Vec<(&str, f64)> = p.levels.iter().map(|l| (l.label.as_str(), l.y)).collect();
        let mut want: Vec<(String, f64)> = cfg
            .baselines
            .iter()
            .map(|b| (format!("{} ({} steps)", b.label, b.steps), 0.01))
            .collect();
        want.push((EXACT.into(), 0.001));
        let want: Vec<(&str, f64)> = want.iter().map(|(l, y)| (l.as_str(), *y)).collect();
        assert_eq!(levels, want);
    }

    #[test]
    fn a_best_is_named_only_when_the_gap_exceeds_the_spread() {
        let (a, b) = (vec![1.0, 1.2, 1.1], vec![2.0, 2.2, 2.1]);
        assert_eq!(clear_best(&[b.clone(), a.clone()]), Some(1));
        // Overlapping spreads: no best.
        assert_eq!(
            clear_best(&[vec![1.0, 2.0, 3.0], vec![1.5, 2.5, 3.5]]),
            None
        );
        // One seed has no spread to compare with, one column nothing to rank.
        assert_eq!(clear_best(&[vec![1.0], vec![2.0]]), None);
        assert_eq!(clear_best(&[a]), None);
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
    }
}
