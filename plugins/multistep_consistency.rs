//! `multistep-ct` and `multistep-cd`: multistep consistency training and distillation,
//! Algorithm 1. One implementation, the variant as data: x_teacher is the example itself (CT: the
//! teacher step then moves along the example's own noise, x_var = 0, so aDDIM is DDIM and z_s is
//! the exact forward sample) or the teacher's E[x | z_t] (CD, with the teacher integrator, aDDIM
//! by default, taking the step z_t -> z_s). The grid, target and losses are the core's
//! ([`fewstep::objective::multistep`]).

use anyhow::Result;
use dfdx::prelude::*;
use fewstep::config::at_least_one;
use fewstep::denoiser::Level;
use fewstep::integrator::{Integrator, TeacherStep};
use fewstep::objective::multistep::{
    consistency_target, paper_xvar_frac, pseudo_huber, teacher_steps, x_var, Draws, Flavour, Grid,
    Prepared, XVarSource,
};
use fewstep::objective::{scale_count, valid_student_steps, DistillObjective, Loss, ObjectiveCtx};
use fewstep::plugins::addim::Addim;
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Algorithm 1's hyper-parameters (paper, A.1: 64 -> 1280 teacher steps over 100k iterations,
/// xvar_frac 0.75, Huber epsilon 1e-4).
#[derive(Serialize, Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Multistep {
    /// Student sampling steps S: the segments diffusion time is cut into (Algorithm 2 samples
    /// with DDIM on this grid).
    #[serde(default = "student_steps", deserialize_with = "at_least_one")]
    pub student_steps: usize,
    /// Teacher steps N(0) at the first iteration.
    #[serde(default = "teacher_steps_start", deserialize_with = "at_least_one")]
    pub teacher_steps_start: usize,
    /// Teacher steps N(I) reached after `anneal_iters` iterations, log-linearly from
    /// `teacher_steps_start`; set both equal for a constant N (the Table 2 ablation).
    #[serde(default = "teacher_steps_end", deserialize_with = "at_least_one")]
    pub teacher_steps_end: usize,
    /// Iterations I of the annealing; 0 uses `teacher_steps_end` from the start.
    #[serde(default = "anneal_iters")]
    pub anneal_iters: u64,
    /// The deterministic one-evaluation step z_t -> z_s that teaches (`addim`, the paper's, or
    /// `ddim`, Table 4's ablation), as a nested `[objective.teacher_integrator]` table.
    #[serde(default = "teacher_integrator")]
    pub teacher_integrator: Box<dyn Integrator>,
    /// eta of the per-example x_var = eta ||x_teacher - x||^2 / d handed to the teacher step
    /// (the paper's xvar_frac). It is 0 for consistency training, where aDDIM is DDIM.
    #[serde(
        default = "paper_xvar_frac",
        deserialize_with = "fewstep::config::non_negative"
    )]
    pub xvar_frac: f64,
    /// "example": the per-example x_var above (Algorithm 1); "integrator": the teacher
    /// integrator's own estimate (e.g. addim's analytic 0.1/(2 + SNR), section 3.2).
    #[serde(default)]
    pub xvar_source: XVarSource,
    /// epsilon of the pseudo-Huber loss sqrt(||x_diff||^2 + eps^2) - eps (an L2 distance for
    /// ||x_diff|| >> eps).
    #[serde(default = "huber_eps", deserialize_with = "fewstep::config::positive")]
    pub huber_eps: f64,
}

fn student_steps() -> usize {
    8
}
fn teacher_steps_start() -> usize {
    64
}
fn teacher_steps_end() -> usize {
    1280
}
fn anneal_iters() -> u64 {
    100_000
}
pub fn teacher_integrator() -> Box<dyn Integrator> {
    Box::new(Addim::default())
}
pub fn huber_eps() -> f64 {
    1e-4
}

impl Default for Multistep {
    /// The same as the config `{}`.
    fn default() -> Self {
        Multistep {
            student_steps: student_steps(),
            teacher_steps_start: teacher_steps_start(),
            teacher_steps_end: teacher_steps_end(),
            anneal_iters: anneal_iters(),
            teacher_integrator: teacher_integrator(),
            xvar_frac: paper_xvar_frac(),
            xvar_source: XVarSource::default(),
            huber_eps: huber_eps(),
        }
    }
}

impl Multistep {
    /// The grid of iteration `i`.
    pub fn grid(&self, i: u64) -> Grid {
        let n = teacher_steps(
            self.teacher_steps_start,
            self.teacher_steps_end,
            self.anneal_iters,
            i,
        );
        Grid::new(n, self.student_steps)
    }

    /// The random draws of one loss: the grid of the iteration, a slot per row, the noise.
    pub fn random_draws(&self, ctx: &mut ObjectiveCtx, rows: usize, dim: usize) -> Draws {
        let grid = self.grid(ctx.iteration);
        let slots = ctx.per_row(rows, |rng| grid.random_slot(rng));
        let eps = ctx.normal(rows, dim);
        Draws { grid, slots, eps }
    }

    pub fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch, flavour: Flavour) -> Result<Loss> {
        let (rows, dim) = *x.shape();
        let draws = self.random_draws(ctx, rows, dim);
        self.loss_with(ctx, x, flavour, &draws)
    }

    /// Algorithm 1 for given draws: (SNR(t) + 1) pseudo-Huber(||x_diff||), batch mean.
    pub fn loss_with(
        &self,
        ctx: &mut ObjectiveCtx,
        x: &Batch,
        flavour: Flavour,
        draws: &Draws,
    ) -> Result<Loss> {
        let p = self.prepare(ctx, x, flavour, draws)?;
        p.student_loss(ctx, |x_hat, target, w| {
            pseudo_huber(x_hat, target, w, self.huber_eps)
        })
    }

    /// z_t, z_s from the teacher step, nograd f(z_s, s), DDIM to t_step and invDDIM back to x.
    pub fn prepare(
        &self,
        ctx: &ObjectiveCtx,
        x: &Batch,
        flavour: Flavour,
        draws: &Draws,
    ) -> Result<Prepared> {
        let (dev, sch) = (ctx.dev, ctx.schedule);
        let times = draws.grid.times_of(&draws.slots);
        let level_t = Level::per_row(dev, sch, &times.t);
        let z_t = level_t.noised(x, &draws.eps);
        let x_teacher = match flavour {
            Flavour::Training => x.clone(),
            Flavour::Distillation => ctx.teacher()?.denoise(&z_t, &level_t)?,
        };
        let x_var = x_var(self.xvar_source, self.xvar_frac, &x_teacher, x);
        let z_s = self.teacher_integrator.teacher_step(TeacherStep {
            dev,
            schedule: sch,
            x_hat: &x_teacher,
            z_t: &z_t,
            t: &times.t,
            s: &times.s,
            x_var: x_var.as_ref(),
        })?;
        let x_target = consistency_target(ctx, z_s, &z_t, &times)?;
        Ok(Prepared {
            times,
            z_t,
            level_t,
            x_target,
        })
    }

    /// Every student step needs at least one teacher step: S above the teacher's steps would be
    /// trained on a coarser grid than asked (Grid::new's N_ps >= 1 clamp).
    pub fn validate(&self) -> Result<()> {
        let fewest = self.teacher_steps_start.min(self.teacher_steps_end);
        if self.student_steps > fewest {
            return fewstep::config::field_error(
                "student_steps",
                format!(
                    "{} exceeds the teacher's steps (teacher_steps_start = {}, teacher_steps_end \
                     = {}): each student step needs at least one teacher step; lower \
                     student_steps or raise both to at least {}",
                    self.student_steps,
                    self.teacher_steps_start,
                    self.teacher_steps_end,
                    self.student_steps
                ),
            );
        }
        fewstep::config::validate_plugin!("teacher_integrator", self.teacher_integrator)
    }

    /// Sets S, which must be at least 1.
    pub fn set_student_steps(&mut self, steps: usize) -> Result<()> {
        self.student_steps = valid_student_steps(steps)?;
        Ok(())
    }
}

/// One registered objective per variant: the same [`Multistep`] config and loss, with the
/// variant's x_teacher as data.
macro_rules! consistency_objective {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $flavour:expr, $summary:literal) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Debug, Default)]
        #[serde(transparent)]
        pub struct $ty(pub Multistep);

        #[typetag::serde(name = $name)]
        impl DistillObjective for $ty {
            fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch) -> Result<Loss> {
                self.0.loss(ctx, x, $flavour)
            }

            fn validate(&self) -> Result<()> {
                self.0.validate()
            }

            fn student_steps(&self) -> Option<usize> {
                Some(self.0.student_steps)
            }

            fn set_student_steps(&mut self, steps: usize) -> Result<()> {
                self.0.set_student_steps(steps)
            }

            fn scale_iterations(&mut self, factor: f64) {
                self.0.anneal_iters = scale_count(self.0.anneal_iters, factor);
            }
        }

        register_plugin!(OBJECTIVE, $name, $ty, $summary);
    };
}

consistency_objective!(
    /// Algorithm 1 on data alone (no teacher model).
    MultistepCt,
    "multistep-ct",
    Flavour::Training,
    "multistep consistency training (Algorithm 1, x_teacher = x): an S-step student from data"
);

consistency_objective!(
    /// Algorithm 1 with a teacher denoiser (a checkpoint, or the exact `gmm`).
    MultistepCd,
    "multistep-cd",
    Flavour::Distillation,
    "multistep consistency distillation (Algorithm 1, aDDIM teacher): an S-step student"
);
