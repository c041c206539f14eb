//! Adjusted DDIM (Algorithm 3): DDIM with its noise direction eps_hat lengthened to put back the
//! variance DDIM drops, deterministically and with one evaluation, so it can teach distillation.

use dfdx::shapes::HasShape;
use fewstep::integrator::xvar::XVar;
use fewstep::integrator::{ddim_coeffs, ddim_step_rows, Integrator, Linear2, StepCtx, TeacherStep};
use fewstep::register_plugin;
use fewstep::schedule::Schedule;
use fewstep::tensor::{row_sq_norm, Batch, Coef, Dev};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// aDDIM; its config is the x_var estimate.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(transparent)]
pub struct Addim(pub XVar);

#[typetag::serde(name = "addim")]
impl Integrator for Addim {
    fn validate(&self) -> anyhow::Result<()> {
        self.0.check()
    }

    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        let x_var = self.0.at(ctx, &z_t, t)?;
        let n = x_var.len();
        Ok(addim_rows(
            ctx.dev,
            ctx.schedule,
            x_hat,
            z_t,
            &vec![t; n],
            &vec![s; n],
            &x_var,
        ))
    }

    fn teacher_step(&self, a: TeacherStep) -> anyhow::Result<Batch> {
        let x_var = match a.x_var {
            Some(v) => v.as_vec().into_iter().map(f64::from).collect(),
            None => self.0.at_times(a.schedule, a.t)?,
        };
        Ok(addim_rows(
            a.dev,
            a.schedule,
            a.x_hat.clone(),
            a.z_t.clone(),
            a.t,
            a.s,
            &x_var,
        ))
    }
}

/// Algorithm 3's update with one (t, s, x_var) per row:
/// z_s = alpha_s x_hat + sqrt(sigma_s^2 + d z_var / ||eps_hat||^2) eps_hat, where
/// eps_hat = (z_t - alpha_t x_hat) / sigma_t and z_var = (alpha_s - alpha_t sigma_s/sigma_t)^2 x_var.
/// Formed as DDIM (alpha_s x_hat + sigma_s eps_hat) plus the extra length
/// sqrt(sigma_s^2 + g) - sigma_s = g / (sqrt(sigma_s^2 + g) + sigma_s) along eps_hat, so x_var = 0
/// or s = t is DDIM bit for bit and no 0/0 arises at s = 0.
pub fn addim_rows(
    dev: &Dev,
    schedule: &dyn Schedule,
    x_hat: Batch,
    z_t: Batch,
    t: &[f64],
    s: &[f64],
    x_var: &[f64],
) -> Batch {
    assert!(
        t.len() == s.len() && t.len() == x_var.len(),
        "addim: one t, s and x_var per row"
    );
    let d = x_hat.shape().1 as f64;
    // eps_hat is unused (zero) on rows with sigma_t = 0, i.e. t = s = 0, where the step is the identity.
    let (ex, ez): (Vec<f64>, Vec<f64>) = t
        .iter()
        .map(|&t| match schedule.alpha_sigma(t) {
            (a, sg) if sg > 0.0 => (-a / sg, 1.0 / sg),
            _ => (0.0, 0.0),
        })
        .unzip();
    let eps_hat = Linear2 {
        cx: Coef::from_host(dev, &ex),
        cz: Coef::from_host(dev, &ez),
    }
    .apply(x_hat.clone(), z_t.clone());
    let eps_sq = row_sq_norm(&eps_hat).as_vec();
    let extra: Vec<f64> = (0..t.len())
        .map(|i| {
            let (c, _) = ddim_coeffs(schedule, t[i], s[i]);
            let sigma_s = schedule.alpha_sigma(s[i]).1;
            let g = d * c * c * x_var[i] / f64::from(eps_sq[i]);
            // g is infinite only where eps_hat = 0, which no length changes.
            if g > 0.0 && g.is_finite() {
                g / ((sigma_s * sigma_s + g).sqrt() + sigma_s)
            } else {
                0.0
            }
        })
        .collect();
    ddim_step_rows(dev, schedule, x_hat, z_t, t, s) + Coef::from_host(dev, &extra).scale(eps_hat)
}

register_plugin!(
    INTEGRATOR,
    "addim",
    Addim,
    "adjusted DDIM (Algorithm 3): deterministic, restores the missing variance, 1 NFE per step"
);
