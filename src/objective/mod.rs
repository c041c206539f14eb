//! Training objectives: the diffusion loss and the distillation losses, picked by `name` in the
//! `[objective]` config table. The trainer owns the network and optimiser; an objective only
//! turns a data batch into a scalar loss with a gradient tape.

pub mod multistep;

use crate::denoiser::{Denoiser, Level, Student, TapedBatch};
use crate::schedule::Schedule;
use crate::seed::SeededRng;
use crate::tensor::host_normal;
use crate::tensor::{Batch, Dev};
use anyhow::{anyhow, bail, Result};
use dfdx::prelude::*;
use rand::Rng;
use std::fmt::Debug;

/// A scalar loss with its tape.
pub type Loss = Tensor<(), f32, Dev, OwnedTape<f32, Dev>>;

/// Everything one loss evaluation may use.
pub struct ObjectiveCtx<'a> {
    pub dev: &'a Dev,
    /// The training schedule (times map to noise levels through it).
    pub schedule: &'a dyn Schedule,
    /// The model being trained, with gradients.
    pub student: &'a dyn Student,
    /// The no-gradient copy of the student for targets such as nograd f(z_s, s).
    pub target: &'a dyn Denoiser,
    /// The teacher of distillation, if the run has one.
    pub teacher: Option<&'a dyn Denoiser>,
    /// Training iteration (for annealed schedules such as the teacher-step count).
    pub iteration: u64,
    /// Host randomness for times and discrete choices; seeded, so runs repeat on CPU. Per-row
    /// choices go through [`Self::per_row`]; draws made here directly are batch-wide (every
    /// rank of a data-parallel run makes the same ones).
    pub rng: &'a mut SeededRng,
    grads: Option<Gradients<f32, Dev>>,
    share: Option<RowShare>,
}

/// The rows of the global batch one process of a data-parallel run computes: its `x` holds rows
/// `offset..offset + x.rows` of a batch of `global` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowShare {
    pub offset: usize,
    pub global: usize,
}

impl<'a> ObjectiveCtx<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dev: &'a Dev,
        schedule: &'a dyn Schedule,
        student: &'a dyn Student,
        target: &'a dyn Denoiser,
        teacher: Option<&'a dyn Denoiser>,
        iteration: u64,
        rng: &'a mut SeededRng,
        grads: Gradients<f32, Dev>,
    ) -> Self {
        ObjectiveCtx {
            dev,
            schedule,
            student,
            target,
            teacher,
            iteration,
            rng,
            grads: Some(grads),
            share: None,
        }
    }

    /// Makes the per-row draws ([`Self::per_row`], [`Self::normal`], [`Self::uniform_times`])
    /// those of rows `share.offset..` of a global batch: each draw is made for all
    /// `share.global` rows, in the single process's order, and this process keeps its rows. So
    /// the ranks of a data-parallel run together draw exactly what one process would.
    pub fn with_share(mut self, share: RowShare) -> Self {
        self.share = Some(share);
        self
    }

    /// Where `rows` local rows sit in the global batch: (offset, global rows).
    fn span(&self, rows: usize) -> (usize, usize) {
        match self.share {
            None => (0, rows),
            Some(s) => {
                assert!(
                    s.offset + rows <= s.global,
                    "{rows} rows from row {} overrun a global batch of {}",
                    s.offset,
                    s.global
                );
                (s.offset, s.global)
            }
        }
    }

    /// One value per row of the batch from `draw`, called in row order on [`Self::rng`]. An
    /// objective makes its per-row random choices here (not in a loop on `rng`), so that a
    /// data-parallel rank draws its rows' values (see [`Self::with_share`]).
    pub fn per_row<T>(&mut self, rows: usize, mut draw: impl FnMut(&mut SeededRng) -> T) -> Vec<T> {
        let (offset, global) = self.span(rows);
        // All `global` draws are made (not stopped at this share's end): the draws after them
        // must start where the single process's do.
        let mut all: Vec<T> = (0..global).map(|_| draw(self.rng)).collect();
        all.truncate(offset + rows);
        all.drain(..offset);
        all
    }

    /// The student's prediction with gradients. One taped forward pass per loss.
    pub fn student_taped(&mut self, z: Batch, level: &Level) -> Result<TapedBatch> {
        let grads = self.grads.take().ok_or_else(|| {
            anyhow!("an objective may run the student with gradients only once per loss")
        })?;
        self.student.denoise_taped(z.traced(grads), level)
    }

    /// Standard normal noise `[rows, dim]` drawn from [`Self::rng`]. Objectives draw their noise
    /// here rather than from the device so that a resumed run repeats exactly (the trainer seeds
    /// `rng` from the run seed and the step).
    pub fn normal(&mut self, rows: usize, dim: usize) -> Batch {
        let (offset, global) = self.span(rows);
        let mut all = host_normal(self.rng, global * dim);
        if global != rows {
            all = all[offset * dim..(offset + rows) * dim].to_vec();
        }
        self.dev.tensor_from_vec(all, (rows, dim))
    }

    /// Times t ~ U(0, 1), one per row, from [`Self::rng`].
    pub fn uniform_times(&mut self, rows: usize) -> Vec<f64> {
        self.per_row(rows, |rng| rng.gen::<f64>())
    }

    /// The teacher, or an error naming what is missing.
    pub fn teacher(&self) -> Result<&'a dyn Denoiser> {
        self.teacher.ok_or_else(|| {
            anyhow!(
                "this objective needs a teacher: set `teacher` (a checkpoint or run folder) or \
                 `[teacher_denoiser]` (a denoiser plugin table) in the config"
            )
        })
    }
}

/// A training loss, picked by `name` in the `[objective]` table.
#[typetag::serde(tag = "name")]
pub trait DistillObjective: Send + Sync + Debug {
    /// The loss of one data batch `x` (`[batch, dim]`).
    fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch) -> Result<Loss>;

    /// Checks the plugin's settings together, where one field's valid range depends on another
    /// (a single field's range is checked as it is read). Called when a config is loaded, before
    /// any work; the error names the fields and their valid values.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The student's sampling steps S, if the objective trains a fixed-step student (recorded
    /// in its checkpoints so `fewstep sample` uses the right grid).
    fn student_steps(&self) -> Option<usize> {
        None
    }

    /// Sets the student's sampling steps S (`fewstep distill --student-steps`, a table row's S)
    /// for objectives that train a fixed-step student. The core sets S only through this, so an
    /// objective keeps its own field names; the default refuses, naming the objective.
    fn set_student_steps(&mut self, _steps: usize) -> Result<()> {
        bail!(
            "objective `{}` trains no fixed-step student, so it takes no student steps",
            self.typetag_name()
        )
    }

    /// The round that iteration `iteration` belongs to, for objectives that train in rounds
    /// (progressive distillation); `None` (the default) for one-round objectives. The trainer:
    /// - before iteration `r.start` of a round with `r.index > 0`, freezes a copy of the student
    ///   (the weights it samples) as the teacher for the whole round, and checkpoints it so a
    ///   run resumed inside the round reloads that teacher from the checkpoint at `r.start`;
    /// - records `r.student_steps` of the last trained iteration's round in checkpoints, in
    ///   place of [`Self::student_steps`].
    fn round(&self, _iteration: u64) -> Option<Round> {
        None
    }

    /// Multiplies the objective's iteration counts (annealing length, round length) by
    /// `factor`, each rounded and at least 1 ([`scale_count`]): `fewstep reproduce --scale`
    /// lengthens or shortens whole runs with it. The default has none to scale.
    fn scale_iterations(&mut self, _factor: f64) {}
}

/// `steps` when it is a valid S (at least 1): what [`DistillObjective::set_student_steps`]
/// implementations check before they store it.
pub fn valid_student_steps(steps: usize) -> Result<usize> {
    if steps == 0 {
        return crate::config::field_error("student_steps", "expected a whole number >= 1, got 0");
    }
    Ok(steps)
}

/// `n` times `factor`, rounded, at least 1: an iteration count scaled by `--scale`.
pub fn scale_count(n: u64, factor: f64) -> u64 {
    ((n as f64 * factor).round() as u64).max(1)
}

/// One round of an objective that trains in rounds, see [`DistillObjective::round`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// 0 for the first round, whose teacher is the run's teacher.
    pub index: usize,
    /// The round's first iteration.
    pub start: u64,
    /// The student's sampling steps once the round is trained.
    pub student_steps: usize,
    /// A round after the first starts over from its teacher (Salimans & Ho): the student's
    /// weights and EMA become the teacher's, AdamW's moments and bias correction and the EMA's
    /// warm-up start afresh. Otherwise the student carries on as it was.
    pub restart: bool,
}
