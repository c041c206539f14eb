//! `multistep-ct`: multistep consistency training, Algorithm 1 with x_teacher = x. The teacher
//! step then moves along the example's own noise (x_var = 0, so aDDIM is DDIM): z_s is the exact
//! forward sample alpha_s x + sigma_s eps, which already has the right spread.

use fewstep::objective::{scale_count, DistillObjective, Loss, ObjectiveCtx};
use fewstep::plugins::multistep::{Flavour, Multistep};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Algorithm 1 on data alone (no teacher model).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Default)]
#[serde(transparent)]
pub struct MultistepCt(pub Multistep);

#[typetag::serde(name = "multistep-ct")]
impl DistillObjective for MultistepCt {
    fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch) -> anyhow::Result<Loss> {
        self.0.loss(ctx, x, Flavour::Training)
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
    "multistep-ct",
    MultistepCt,
    "multistep consistency training (Algorithm 1, x_teacher = x): an S-step student from data"
);
