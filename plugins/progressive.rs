//! `progressive`: progressive distillation (Salimans & Ho, 2022), reimplemented as in the paper
//! with an aDDIM teacher. Round r's student takes half the steps of its teacher: one student DDIM
//! step t -> t - 1/n must land where two teacher steps do, so its target is
//! x = invDDIM_{t -> t-1/n}(z_{t-1/n}, z_t). From round two on the teacher is the previous round's
//! student (the trainer swaps it in, see `DistillObjective::round`).

use dfdx::shapes::HasShape;
use fewstep::config::{at_least_one, field_error};
use fewstep::denoiser::Level;
use fewstep::integrator::{inv_ddim_rows, Integrator, TeacherStep};
use fewstep::objective::multistep::{
    mean_square, paper_xvar_frac, x_var, Prepared, Times, XVarSource,
};
use fewstep::objective::{
    scale_count, valid_student_steps, DistillObjective, Loss, ObjectiveCtx, Round,
};
use fewstep::plugins::addim::Addim;
use fewstep::plugins::ddim::Ddim;
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rounds that halve the steps, from S 2^rounds teacher steps down to an S-step student.
#[derive(Serialize, Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Progressive {
    /// Student sampling steps S after the last round.
    #[serde(default = "student_steps", deserialize_with = "at_least_one")]
    pub student_steps: usize,
    /// Number of halvings: the first teacher samples with S 2^rounds steps.
    #[serde(default = "rounds", deserialize_with = "at_least_one")]
    pub rounds: usize,
    /// The first teacher's steps instead of `rounds`: rounds = log2(teacher_steps / S), so one
    /// config distils every S from the same start (e.g. 64). It must be S x 2^k with k >= 1
    /// (each round halves the steps); another value is refused when the config is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_steps: Option<usize>,
    /// Training iterations per round; iterations past the last round continue it.
    #[serde(default = "iters_per_round", deserialize_with = "at_least_one_u64")]
    pub iters_per_round: u64,
    /// Teacher step of round one, whose teacher is the diffusion model (`addim` as in the paper).
    #[serde(default = "teacher_integrator")]
    pub teacher_integrator: Box<dyn Integrator>,
    /// Teacher step of later rounds, whose teachers are students. `ddim` by default: aDDIM's
    /// correction assumes a posterior-mean teacher, and on student teachers it swings the
    /// samples' spread from round to round (tests/progressive_rounds.rs).
    #[serde(default = "later_integrator")]
    pub later_integrator: Box<dyn Integrator>,
    /// eta of the per-example x_var = eta ||x_teacher - x||^2 / d of each teacher step.
    #[serde(
        default = "paper_xvar_frac",
        deserialize_with = "fewstep::config::non_negative"
    )]
    pub xvar_frac: f64,
    /// "example": the per-example x_var above; "integrator": the integrator's own estimate.
    #[serde(default)]
    pub xvar_source: XVarSource,
    /// Each round after the first starts from its teacher with fresh AdamW moments and EMA, as
    /// Salimans & Ho's rounds do; `false` carries the student's optimiser state across rounds.
    #[serde(default = "restart_rounds")]
    pub restart_rounds: bool,
}

fn restart_rounds() -> bool {
    true
}

fn student_steps() -> usize {
    8
}
fn rounds() -> usize {
    6
}
fn iters_per_round() -> u64 {
    10_000
}
fn teacher_integrator() -> Box<dyn Integrator> {
    Box::new(Addim::default())
}
fn later_integrator() -> Box<dyn Integrator> {
    Box::new(Ddim {})
}

fn at_least_one_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    at_least_one(d).map(|n| n as u64)
}

impl Default for Progressive {
    /// The same as the config `{}`.
    fn default() -> Self {
        Progressive {
            student_steps: student_steps(),
            rounds: rounds(),
            teacher_steps: None,
            iters_per_round: iters_per_round(),
            teacher_integrator: teacher_integrator(),
            later_integrator: later_integrator(),
            xvar_frac: paper_xvar_frac(),
            xvar_source: XVarSource::default(),
            restart_rounds: restart_rounds(),
        }
    }
}

impl Progressive {
    /// The number of halvings: `rounds`, or the one `teacher_steps` implies (a valid one,
    /// [`DistillObjective::validate`]: S x 2^rounds).
    pub fn rounds(&self) -> usize {
        match self.teacher_steps {
            Some(n) => (n / self.student_steps).max(2).ilog2() as usize,
            None => self.rounds,
        }
    }

    /// The round of iteration `i` (the last round goes on past its end).
    pub fn round_at(&self, i: u64) -> Round {
        let rounds = self.rounds();
        let index = ((i / self.iters_per_round) as usize).min(rounds - 1);
        Round {
            index,
            start: index as u64 * self.iters_per_round,
            student_steps: self.student_steps << (rounds - index - 1),
            restart: self.restart_rounds,
        }
    }

    /// Per row k in 1..=n (n = the round's student steps): t = k/n, the teacher's midpoint
    /// t - 1/(2n) in `times.s` and the student step's end t - 1/n in `times.t_step`, from integer
    /// numerators over 2n; then z_t and the two-teacher-step target.
    pub fn prepare(
        &self,
        ctx: &ObjectiveCtx,
        x: &Batch,
        round: &Round,
        ks: &[usize],
        eps: &Batch,
    ) -> anyhow::Result<Prepared> {
        let (dev, sch) = (ctx.dev, ctx.schedule);
        let twice = (2 * round.student_steps) as f64;
        let at =
            |off: usize| -> Vec<f64> { ks.iter().map(|&k| (2 * k - off) as f64 / twice).collect() };
        let times = Times {
            t: at(0),
            s: at(1),
            t_step: at(2),
        };
        let teacher = ctx.teacher()?;
        let integrator = match round.index {
            0 => &self.teacher_integrator,
            _ => &self.later_integrator,
        };
        let level_t = Level::per_row(dev, sch, &times.t);
        let z_t = level_t.noised(x, eps);
        let mut z = z_t.clone();
        for (from, to) in [(&times.t, &times.s), (&times.s, &times.t_step)] {
            let x_teacher = teacher.denoise(&z, &Level::per_row(dev, sch, from))?;
            let x_var = x_var(self.xvar_source, self.xvar_frac, &x_teacher, x);
            z = integrator.teacher_step(TeacherStep {
                dev,
                schedule: sch,
                x_hat: &x_teacher,
                z_t: &z,
                t: from,
                s: to,
                x_var: x_var.as_ref(),
            })?;
        }
        let x_target = inv_ddim_rows(dev, sch, z, z_t.clone(), &times.t, &times.t_step);
        Ok(Prepared {
            times,
            z_t,
            level_t,
            x_target,
        })
    }
}

#[typetag::serde(name = "progressive")]
impl DistillObjective for Progressive {
    /// (SNR(t) + 1) ||x_hat - x_target||^2 / d, Salimans & Ho's v-loss.
    fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch) -> anyhow::Result<Loss> {
        let (rows, dim) = *x.shape();
        let round = self.round_at(ctx.iteration);
        let ks: Vec<usize> = ctx.per_row(rows, |rng| rng.gen_range(1..=round.student_steps));
        let eps = ctx.normal(rows, dim);
        self.prepare(ctx, x, &round, &ks, &eps)?
            .student_loss(ctx, mean_square)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(n) = self.teacher_steps {
            let s = self.student_steps;
            // Round r's student takes half its teacher's steps, so the first teacher takes
            // S 2^rounds; any other count would silently train from a different teacher.
            if !(n >= 2 * s && n % s == 0 && (n / s).is_power_of_two()) {
                let valid: Vec<String> = (1..=4).map(|k| (s << k).to_string()).collect();
                return field_error(
                    "teacher_steps",
                    format!(
                        "{n} is not student_steps = {s} times 2, 4, 8, ... (each round halves \
                         the steps down to the student's); valid: {}, ...",
                        valid.join(", ")
                    ),
                );
            }
        }
        for (key, integrator) in [
            ("teacher_integrator", &self.teacher_integrator),
            ("later_integrator", &self.later_integrator),
        ] {
            fewstep::config::validate_plugin!(key, integrator)?;
        }
        Ok(())
    }

    fn student_steps(&self) -> Option<usize> {
        Some(self.student_steps)
    }

    fn set_student_steps(&mut self, steps: usize) -> anyhow::Result<()> {
        self.student_steps = valid_student_steps(steps)?;
        Ok(())
    }

    fn round(&self, iteration: u64) -> Option<Round> {
        Some(self.round_at(iteration))
    }

    fn scale_iterations(&mut self, factor: f64) {
        self.iters_per_round = scale_count(self.iters_per_round, factor);
    }
}

register_plugin!(
    OBJECTIVE,
    "progressive",
    Progressive,
    "progressive distillation (Salimans & Ho) with an aDDIM first teacher: rounds halve the steps"
);
