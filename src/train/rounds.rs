//! The frozen teachers of an objective's later rounds.

use crate::checkpoint::{self, Meta};
use crate::denoiser::{self, Denoiser, Network};
use crate::dist::Collective;
use crate::objective::Round;
use crate::tensor::{Dev, HostTensor, StateDict};
use anyhow::{Context, Result};
use std::path::Path;

/// The teacher of a round after the first (see [`DistillObjective::round`]): the student as it
/// was when the round began, frozen. It is saved as `rounds/ckpt-<start>.safetensors` in the
/// run folder (out of reach of checkpoint pruning), so a run resumed inside the round reloads
/// the same teacher.
#[derive(Default)]
pub(super) struct RoundTeacher {
    current: Option<(usize, Box<dyn Denoiser>)>,
}

impl RoundTeacher {
    /// Makes round `r`'s teacher current: loads it, or first saves the student's `state` as it
    /// (rank 0 of `world` saves; every rank loads it once it is there).
    pub(super) fn enter(
        &mut self,
        world: &dyn Collective,
        r: &Round,
        out: &Path,
        dev: &Dev,
        state: impl FnOnce() -> StateDict,
        meta: Meta,
    ) -> Result<()> {
        if self.current.as_ref().is_some_and(|(i, _)| *i == r.index) {
            return Ok(());
        }
        let dir = out.join("rounds");
        let path = dir.join(checkpoint::file_name(r.start));
        if world.is_root() && !path.exists() {
            checkpoint::save(&dir, &meta, &state())?;
            tracing::info!("round {} teacher: {}", r.index, path.display());
        }
        world.barrier();
        let teacher = denoiser::trained(&path, dev)
            .with_context(|| format!("cannot load the teacher of round {}", r.index))?;
        self.current = Some((r.index, teacher));
        Ok(())
    }

    pub(super) fn teacher(&self) -> Option<&dyn Denoiser> {
        self.current.as_ref().map(|(_, t)| t.as_ref())
    }
}

/// Starts a restarting round (see [`crate::objective::Round::restart`]) from its teacher: the
/// student's weights become its EMA weights (what the round's teacher was saved from), and
/// AdamW's moments start from zero.
pub(super) fn restart_from_ema(net: &mut dyn Network) -> Result<()> {
    let mut state = StateDict::new();
    for (key, t) in net.state(&["ema"]) {
        let name = key
            .strip_prefix("ema.")
            .expect("state keys are <part>.<name>");
        let zeros = HostTensor {
            shape: t.shape.clone(),
            values: vec![0.0; t.values.len()],
        };
        state.insert(format!("adam_m.{name}"), zeros.clone());
        state.insert(format!("adam_v.{name}"), zeros);
        state.insert(format!("net.{name}"), t);
    }
    net.load_state(&state, &["net", "adam_m", "adam_v"])
}
