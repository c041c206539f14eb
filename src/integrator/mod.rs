//! Integrators (samplers): one step of the reverse process from t to s < t, plus the pure DDIM
//! helpers (eq. 4 and 5 of the paper) that distillation objectives reuse. Multistep integrators
//! also keep a per-run [`RunState`] that the sampling loop creates and hands to every step.

pub mod multistep;
pub mod xvar;
pub mod xvar_table;

use crate::denoiser::{Denoiser, Level};
use crate::schedule::Schedule;
use crate::tensor::{batch_from_vec, Batch, Coef, Dev, Rows};
use anyhow::{anyhow, bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::any::Any;
use std::fmt::Debug;

/// What an integrator step may use: the device, the schedule, the denoiser and per-row noise
/// streams. Every denoiser call goes through [`StepCtx::denoise`], so the number of function
/// evaluations (NFE) is counted exactly.
pub struct StepCtx<'a> {
    pub dev: &'a Dev,
    pub schedule: &'a dyn Schedule,
    pub denoiser: &'a dyn Denoiser,
    nfe: usize,
    noise: RowStreams,
}

/// Where a run's per-row noise comes from: row `i` of the batch draws from its own ChaCha8
/// stream `first_row + i` of `seed`. A stochastic integrator that draws with
/// [`StepCtx::row_normal`] then gives every row the same noise however the rows are split into
/// batches (`fewstep sample --batch`), as long as each batch names its first row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowNoise {
    pub seed: u64,
    pub first_row: u64,
}

/// The generators of [`RowNoise`], made at the first draw (one per row).
#[derive(Clone)]
struct RowStreams {
    spec: RowNoise,
    rngs: Vec<ChaCha8Rng>,
}

impl<'a> StepCtx<'a> {
    /// A context whose per-row noise is [`RowNoise::default`] (seed 0, rows from 0); samplers
    /// that are given a seed set it with [`StepCtx::with_noise`].
    pub fn new(dev: &'a Dev, schedule: &'a dyn Schedule, denoiser: &'a dyn Denoiser) -> Self {
        StepCtx {
            dev,
            schedule,
            denoiser,
            nfe: 0,
            noise: RowStreams {
                spec: RowNoise::default(),
                rngs: Vec::new(),
            },
        }
    }

    /// The same context drawing its per-row noise from `noise`.
    pub fn with_noise(mut self, noise: RowNoise) -> Self {
        self.noise = RowStreams {
            spec: noise,
            rngs: Vec::new(),
        };
        self
    }

    /// Standard normal noise `[n, d]`, row `i` drawn from its own stream (see [`RowNoise`]).
    /// Every draw of a run must have the same number of rows.
    pub fn row_normal(&mut self, n: usize, d: usize) -> Result<Batch> {
        let streams = &mut self.noise;
        if streams.rngs.is_empty() {
            streams.rngs = (0..n as u64)
                .map(|i| {
                    let mut rng = ChaCha8Rng::seed_from_u64(streams.spec.seed);
                    rng.set_stream(streams.spec.first_row + i);
                    rng
                })
                .collect();
        }
        if streams.rngs.len() != n {
            bail!(
                "per-row noise for {n} rows asked of a run of {} rows; a run keeps its batch",
                streams.rngs.len()
            );
        }
        let mut values = Vec::with_capacity(n * d);
        for rng in &mut streams.rngs {
            values.extend((0..d).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)));
        }
        Ok(batch_from_vec(self.dev, values, n, d))
    }

    /// The noise streams' position, to try a step and then take it back
    /// ([`StepCtx::restore_noise`]).
    pub fn save_noise(&self) -> SavedNoise {
        SavedNoise(self.noise.clone())
    }

    /// Puts the noise streams back where [`StepCtx::save_noise`] found them.
    pub fn restore_noise(&mut self, saved: SavedNoise) {
        self.noise = saved.0;
    }

    /// x_hat = E[x | z_t]; counts one function evaluation.
    pub fn denoise(&mut self, z: &Batch, t: f64) -> Result<Batch> {
        self.nfe += 1;
        self.denoiser.denoise(z, &Level::at(self.schedule, t))
    }

    /// The denoiser's exact posterior variance tr(Var[x|z_t])/d at t, if it offers one.
    /// Evaluated together with the mean, so it is not counted as a separate evaluation.
    pub fn posterior_variance(&self, z: &Batch, t: f64) -> Option<Result<Rows>> {
        self.denoiser
            .posterior_variance(z, &Level::at(self.schedule, t))
    }

    /// Function evaluations so far.
    pub fn nfe(&self) -> usize {
        self.nfe
    }
}

/// A position of a run's noise streams (see [`StepCtx::save_noise`]).
pub struct SavedNoise(RowStreams);

/// What a multistep integrator carries from one step of a run to the next (earlier predictions,
/// a step counter). Any `Clone` type is one; cloning lets [`crate::sampling::trajectory`] try a
/// step without committing it.
pub trait RunState: Any {
    fn clone_box(&self) -> Box<dyn RunState>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone> RunState for T {
    fn clone_box(&self) -> Box<dyn RunState> {
        Box::new(self.clone())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The run state an integrator made with [`Integrator::new_state`], as its own type; an error
/// naming `who` if the step was given none (or another integrator's).
pub fn run_state<'s, T: Any>(state: Option<&'s mut dyn RunState>, who: &str) -> Result<&'s mut T> {
    state
        .and_then(|s| s.as_any_mut().downcast_mut::<T>())
        .ok_or_else(|| {
            anyhow!(
                "integrator `{who}` keeps state between steps and was stepped without its own; \
                 step it through `Integrator::step_in_run` with the state of its `new_state`"
            )
        })
}

/// A sampler step, picked by `name` in the `[integrator]` config table.
#[typetag::serde(tag = "name")]
pub trait Integrator: Send + Sync + Debug {
    /// One step from time t to time s < t (s may be 0, the last step). For a multistep
    /// integrator this is a run of one step: no earlier predictions to reuse.
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> Result<Batch>;

    /// Checks the plugin's settings together, where one field's valid range depends on another
    /// (a single field's range is checked as it is read). Called when a config is loaded, before
    /// any work; the error names the fields and their valid values.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The state a run over `grid` starts from, for integrators that reuse earlier steps
    /// (multistep solvers). The sampling loop makes one per run and passes it to every
    /// [`Integrator::step_in_run`]. `None` (the default): every step stands alone.
    fn new_state(&self, _grid: &[f64]) -> Option<Box<dyn RunState>> {
        None
    }

    /// One step of a run, with the run's state (`None` when [`Integrator::new_state`] made
    /// none). The default ignores it and takes [`Integrator::step`].
    fn step_in_run(
        &self,
        ctx: &mut StepCtx,
        _state: Option<&mut dyn RunState>,
        z_t: Batch,
        t: f64,
        s: f64,
    ) -> Result<Batch> {
        self.step(ctx, z_t, t, s)
    }

    /// A deterministic step from a given prediction x_hat, with a time and an optional
    /// posterior-variance estimate per row: the teacher step of distillation (Algorithm 1).
    /// Integrators that need extra evaluations or noise cannot teach and say so.
    fn teacher_step(&self, _args: TeacherStep) -> Result<Batch> {
        bail!(
            "integrator `{}` cannot be a distillation teacher (it needs a deterministic \
             single-evaluation update); use `ddim` or `addim`",
            self.typetag_name()
        )
    }
}

/// Inputs of [`Integrator::teacher_step`]: per-row times and an optional per-row x_var.
pub struct TeacherStep<'a> {
    pub dev: &'a Dev,
    pub schedule: &'a dyn Schedule,
    pub x_hat: &'a Batch,
    pub z_t: &'a Batch,
    pub t: &'a [f64],
    pub s: &'a [f64],
    /// tr(Var[x | z_t]) / d per row (e.g. eta * ||x_teacher - x||^2 / d).
    pub x_var: Option<&'a Rows>,
}

/// Coefficients of a linear map `(x, z) -> cx * x + cz * z`, formed in f64.
#[derive(Clone, Debug)]
pub struct Linear2 {
    pub cx: Coef,
    pub cz: Coef,
}

impl Linear2 {
    pub fn apply(&self, x: Batch, z: Batch) -> Batch {
        self.cx.scale(x) + self.cz.scale(z)
    }

    fn from_pairs(dev: &Dev, pairs: Vec<(f64, f64)>) -> Self {
        let (cx, cz): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
        Linear2 {
            cx: Coef::from_host(dev, &cx),
            cz: Coef::from_host(dev, &cz),
        }
    }
}

/// DDIM (eq. 4) as coefficients: DDIM_{t->s}(x, z_t) = (alpha_s - alpha_t sigma_s/sigma_t) x
/// plus (sigma_s/sigma_t) z_t. With s == t it is the identity (also at t = s = 0, where the ratio is
/// 0/0), which the multistep consistency loss relies on.
pub fn ddim_coeffs(schedule: &dyn Schedule, t: f64, s: f64) -> (f64, f64) {
    if s == t {
        return (0.0, 1.0);
    }
    let (at, st) = schedule.alpha_sigma(t);
    let (as_, ss) = schedule.alpha_sigma(s);
    let r = ss / st;
    (as_ - at * r, r)
}

/// Inverse DDIM (eq. 5) as coefficients: x = (z_s - (sigma_s/sigma_t) z_t) /
/// (alpha_s - alpha_t sigma_s/sigma_t). The denominator is tiny for close t and s (about 1e-3 at
/// 1280 teacher steps), which is why coefficients are formed in f64.
pub fn inv_ddim_coeffs(schedule: &dyn Schedule, t: f64, s: f64) -> (f64, f64) {
    let (a, r) = ddim_coeffs(schedule, t, s);
    assert!(
        a != 0.0,
        "inv_ddim undefined for t = {t}, s = {s} (alpha_s - alpha_t sigma_s/sigma_t = 0)"
    );
    (1.0 / a, -r / a)
}

/// Coefficients `coeffs(schedule, t, s)` (DDIM's or its inverse's) applied to the whole batch.
type Coeffs = fn(&dyn Schedule, f64, f64) -> (f64, f64);

fn apply_scalar(
    coeffs: Coeffs,
    schedule: &dyn Schedule,
    a: Batch,
    b: Batch,
    t: f64,
    s: f64,
) -> Batch {
    let (cx, cz) = coeffs(schedule, t, s);
    Linear2 {
        cx: Coef::Scalar(cx),
        cz: Coef::Scalar(cz),
    }
    .apply(a, b)
}

/// The same with one (t, s) per row.
fn apply_rows(
    coeffs: Coeffs,
    dev: &Dev,
    schedule: &dyn Schedule,
    (a, b): (Batch, Batch),
    t: &[f64],
    s: &[f64],
) -> Batch {
    let pairs = t
        .iter()
        .zip(s)
        .map(|(&t, &s)| coeffs(schedule, t, s))
        .collect();
    Linear2::from_pairs(dev, pairs).apply(a, b)
}

/// DDIM_{t->s}(x, z_t) for the whole batch at one (t, s).
pub fn ddim_step(schedule: &dyn Schedule, x: Batch, z_t: Batch, t: f64, s: f64) -> Batch {
    apply_scalar(ddim_coeffs, schedule, x, z_t, t, s)
}

/// invDDIM_{t->s}(z_s, z_t) for the whole batch at one (t, s).
pub fn inv_ddim(schedule: &dyn Schedule, z_s: Batch, z_t: Batch, t: f64, s: f64) -> Batch {
    apply_scalar(inv_ddim_coeffs, schedule, z_s, z_t, t, s)
}

/// DDIM with one (t, s) per row.
pub fn ddim_step_rows(
    dev: &Dev,
    schedule: &dyn Schedule,
    x: Batch,
    z_t: Batch,
    t: &[f64],
    s: &[f64],
) -> Batch {
    apply_rows(ddim_coeffs, dev, schedule, (x, z_t), t, s)
}

/// Inverse DDIM with one (t, s) per row.
pub fn inv_ddim_rows(
    dev: &Dev,
    schedule: &dyn Schedule,
    z_s: Batch,
    z_t: Batch,
    t: &[f64],
    s: &[f64],
) -> Batch {
    apply_rows(inv_ddim_coeffs, dev, schedule, (z_s, z_t), t, s)
}
