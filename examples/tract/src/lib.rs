//! `tract`: TRACT, transitive closure time-distillation (Berthelot et al., 2023, "TRACT:
//! Denoising Diffusion Models with Transitive Closure Time-Distillation", arXiv:2303.04248), as a
//! fewstep objective that lives outside fewstep's sources. This crate only depends on `fewstep`:
//! it implements [`DistillObjective`], registers it with `typetag` and `register_plugin!`, and its
//! binary (`src/main.rs`) is the whole `fewstep` CLI with `tract` added. It also holds the
//! `midpoint` integrator that docs/writing-a-plugin.md walks through.
//!
//! TRACT distils in a few phases (the paper goes 1024 -> 32 -> 1 steps in two). Phase k cuts
//! diffusion time into S_k segments, S_0 > ... > S_{P-1} = S (the student's sampling steps),
//! shrinking by one integer factor per phase. Its teacher takes T_k steps: the run's teacher at
//! `teacher_steps` in phase 0, then the previous phase's student at its S_{k-1} steps (phases
//! are rounds: by the contract of [`DistillObjective::round`] the trainer hands a round's
//! objective the previous round's frozen student as `ctx.teacher`). Each segment thus holds
//! N = T_k / S_k teacher steps, on fewstep's [`Grid`]. An example at t = k/T (T = N S_k), in the
//! segment that starts at t_step, gets the self-teacher target of the multistep paper's
//! Algorithm 1:
//!
//! ```text
//! z_s      = one teacher step from t to s = t - 1/T
//! z_ref    = DDIM_{s -> t_step}(f(z_s, s), z_s)      f: the student, without gradients
//! x_target = invDDIM_{t -> t_step}(z_ref, z_t)
//! ```
//!
//! so the student's one DDIM jump t -> t_step learns to land where one teacher step followed by
//! its own jump from s lands. At s = t_step the jump is the identity and the target is the
//! teacher step alone; by induction over a segment's steps (the transitive closure) the student
//! learns the teacher's whole segment. The loss is the squared error on x weighted by
//! SNR(t) + 1, as in binary time-distillation (progressive distillation), which TRACT extends.
//!
//! One simplification: the self-teacher f is the student's training weights without gradients
//! (fewstep's [`ObjectiveCtx::target`]) where TRACT uses an EMA of them.

use anyhow::Result;
use dfdx::shapes::HasShape;
use fewstep::config::at_least_one;
use fewstep::denoiser::Level;
use fewstep::integrator::{Integrator, TeacherStep};
use fewstep::objective::multistep::{consistency_target, mean_square, Grid, Prepared, Slot};
use fewstep::objective::{
    scale_count, valid_student_steps, DistillObjective, Loss, ObjectiveCtx, Round,
};
use fewstep::plugins::ddim::Ddim;
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

pub mod midpoint;

/// TRACT's phases and teacher step.
#[derive(Serialize, Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Tract {
    /// Student sampling steps S: the segments of the last phase.
    #[serde(default = "student_steps", deserialize_with = "at_least_one")]
    pub student_steps: usize,
    /// Sampling steps T of the run's teacher: the teacher grid of the first phase.
    #[serde(default = "teacher_steps", deserialize_with = "at_least_one")]
    pub teacher_steps: usize,
    /// Phases P: the segments shrink from T towards S by the integer factor round((T/S)^(1/P))
    /// per phase, so phase k has S factor^(P-1-k) segments.
    #[serde(default = "phases", deserialize_with = "at_least_one")]
    pub phases: usize,
    /// Training iterations per phase; iterations past the last phase continue it.
    #[serde(default = "iters_per_phase", deserialize_with = "at_least_one_u64")]
    pub iters_per_phase: u64,
    /// Teacher step of the first phase (`ddim` as in TRACT, or `addim`). Later phases' teachers
    /// are students, stepped with DDIM, the sampler they were trained for.
    #[serde(default = "teacher_integrator")]
    pub teacher_integrator: Box<dyn Integrator>,
}

fn student_steps() -> usize {
    8
}
fn teacher_steps() -> usize {
    128
}
fn phases() -> usize {
    2
}
fn iters_per_phase() -> u64 {
    1000
}
fn teacher_integrator() -> Box<dyn Integrator> {
    Box::new(Ddim {})
}

fn at_least_one_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    at_least_one(d).map(|n| n as u64)
}

impl Default for Tract {
    /// The same as the config `{}`.
    fn default() -> Self {
        Tract {
            student_steps: student_steps(),
            teacher_steps: teacher_steps(),
            phases: phases(),
            iters_per_phase: iters_per_phase(),
            teacher_integrator: teacher_integrator(),
        }
    }
}

impl Tract {
    /// How many times fewer segments each phase has than the one before: round((T/S)^(1/P)),
    /// at least 1. An integer, so a phase's teacher (the previous student) has whole segments.
    pub fn factor(&self) -> usize {
        let ratio = self.teacher_steps as f64 / self.student_steps as f64;
        (ratio.powf(1.0 / self.phases as f64).round() as usize).max(1)
    }

    /// S_k, the student segments of phase `k`: S factor^(P-1-k), S in the last phase.
    pub fn segments(&self, k: usize) -> usize {
        let later = self.phases.saturating_sub(k + 1) as u32;
        self.student_steps * self.factor().pow(later)
    }

    /// T_k, the steps of phase `k`'s teacher: the run's teacher's, then the previous student's.
    pub fn teacher_steps_of(&self, k: usize) -> usize {
        match k {
            0 => self.teacher_steps,
            _ => self.segments(k - 1),
        }
    }

    /// Phase `k`'s grid: S_k segments of round(T_k / S_k) teacher steps.
    pub fn grid(&self, k: usize) -> Grid {
        Grid::new(self.teacher_steps_of(k) as f64, self.segments(k))
    }

    /// The phase of iteration `i`; the last phase goes on past its end.
    pub fn phase_at(&self, i: u64) -> Round {
        let index = ((i / self.iters_per_phase) as usize).min(self.phases - 1);
        Round {
            index,
            start: index as u64 * self.iters_per_phase,
            student_steps: self.segments(index),
            // The student carries its optimiser state into the next phase.
            restart: false,
        }
    }

    /// z_t and the target of the student's jump t -> t_step, for given slots on phase `k`'s grid
    /// and noise `eps` (kept apart from the loss so tests can fix them).
    pub fn prepare(
        &self,
        ctx: &ObjectiveCtx,
        x: &Batch,
        k: usize,
        slots: &[Slot],
        eps: &Batch,
    ) -> Result<Prepared> {
        let (dev, sch) = (ctx.dev, ctx.schedule);
        let times = self.grid(k).times_of(slots);
        let level_t = Level::per_row(dev, sch, &times.t);
        let z_t = level_t.noised(x, eps);
        let x_teacher = ctx.teacher()?.denoise(&z_t, &level_t)?;
        let step = TeacherStep {
            dev,
            schedule: sch,
            x_hat: &x_teacher,
            z_t: &z_t,
            t: &times.t,
            s: &times.s,
            x_var: None,
        };
        let z_s = match k {
            0 => self.teacher_integrator.teacher_step(step)?,
            _ => Ddim {}.teacher_step(step)?,
        };
        let x_target = consistency_target(ctx, z_s, &z_t, &times)?;
        Ok(Prepared {
            times,
            z_t,
            level_t,
            x_target,
        })
    }
}

#[typetag::serde(name = "tract")]
impl DistillObjective for Tract {
    /// (SNR(t) + 1) ||x_hat - x_target||^2 / d on the current phase's grid, batch mean.
    fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch) -> Result<Loss> {
        let (rows, dim) = *x.shape();
        let k = self.phase_at(ctx.iteration).index;
        let grid = self.grid(k);
        let slots: Vec<Slot> = ctx.per_row(rows, |rng| grid.random_slot(rng));
        let eps = ctx.normal(rows, dim);
        self.prepare(ctx, x, k, &slots, &eps)?
            .student_loss(ctx, mean_square)
    }

    fn student_steps(&self) -> Option<usize> {
        Some(self.student_steps)
    }

    fn set_student_steps(&mut self, steps: usize) -> Result<()> {
        self.student_steps = valid_student_steps(steps)?;
        Ok(())
    }

    fn round(&self, iteration: u64) -> Option<Round> {
        Some(self.phase_at(iteration))
    }

    fn scale_iterations(&mut self, factor: f64) {
        self.iters_per_phase = scale_count(self.iters_per_phase, factor);
    }
}

register_plugin!(
    OBJECTIVE,
    "tract",
    Tract,
    "TRACT (Berthelot et al. 2023): phases of shrinking segments, self-teacher targets"
);
