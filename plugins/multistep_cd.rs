//! `multistep-cd`: multistep consistency distillation, Algorithm 1 with x_teacher the teacher's
//! E[x | z_t] and the teacher integrator (aDDIM by default) taking the step z_t -> z_s.

use fewstep::objective::{scale_count, DistillObjective, Loss, ObjectiveCtx};
use fewstep::plugins::multistep::{Flavour, Multistep};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Algorithm 1 with a teacher denoiser (a checkpoint, or the exact `gmm`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Default)]
#[serde(transparent)]
pub struct MultistepCd(pub Multistep);

#[typetag::serde(name = "multistep-cd")]
impl DistillObjective for MultistepCd {
    fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch) -> anyhow::Result<Loss> {
        self.0.loss(ctx, x, Flavour::Distillation)
    }

    fn student_steps(&self) -> Option<usize> {
        Some(self.0.student_steps)
    }

    fn scale_iterations(&mut self, factor: f64) {
        self.0.anneal_iters = scale_count(self.0.anneal_iters, factor);
    }
}

register_plugin!(
    OBJECTIVE,
    "multistep-cd",
    MultistepCd,
    "multistep consistency distillation (Algorithm 1, aDDIM teacher): an S-step student"
);
