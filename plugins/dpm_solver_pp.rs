//! DPM-Solver++ (Lu et al. 2022), multistep, in its data-prediction form: the exponential
//! integrator of the probability-flow ODE in lambda = ln(alpha/sigma),
//!   z_s = (sigma_s/sigma_t) z_t + sigma_s int_{lambda_t}^{lambda_s} e^lambda x_hat(lambda) dlambda,
//! with x_hat extrapolated from the last `order` predictions. Order 1 is DDIM; order 2 is
//! DPM-Solver++(2M) (the paper's Algorithm 2, diffusers' `solver_type = "midpoint"`); order 3 is
//! the third-order multistep update. The first steps of a run have fewer predictions and run at
//! lower order, as in diffusers; so does a step to sigma_s = 0 (it returns x_hat), and with
//! `lower_order_final` the last two steps of a run shorter than 15 steps (diffusers' default).
//!
//! Order 3 differs from diffusers' and k-diffusion's 3M in one factor. Their second difference
//! D2 = (D1_0 - D1_1)/(r0 + r1) estimates h^2 x_hat''/2, but the term it multiplies,
//! -alpha_s phi_3 = alpha_s (1/2 - (e^{-h} - 1 + h)/h^2), is the weight of h^2 x_hat'' in the
//! exponential integral; so their step has local error O(h^3), second order overall (measured in
//! tests/solvers.rs). Here D2 is twice theirs, which makes the step third order;
//! `diffusers_3m = true` restores theirs.

use fewstep::config::one_to_three;
use fewstep::integrator::multistep::{combine, half_logsnr, History, Point};
use fewstep::integrator::{run_state, Integrator, RunState, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// DPM-Solver++ multistep: deterministic, 1 NFE per step.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct DpmSolverPp {
    /// Order of the multistep update: 1 (DDIM), 2 (DPM-Solver++(2M)) or 3 (3M).
    #[serde(default = "order", deserialize_with = "one_to_three")]
    pub order: usize,
    /// In runs of fewer than 15 steps, take the last step at first order and the one before at
    /// most at second (diffusers' `lower_order_final`, which steadies few-step sampling).
    #[serde(default = "yes")]
    pub lower_order_final: bool,
    /// Order 3 only: diffusers' 3M coefficients, whose second-difference term is half the Taylor
    /// one (second order overall; see the module documentation).
    #[serde(default)]
    pub diffusers_3m: bool,
}

fn order() -> usize {
    2
}

fn yes() -> bool {
    true
}

impl Default for DpmSolverPp {
    fn default() -> Self {
        DpmSolverPp {
            order: order(),
            lower_order_final: yes(),
            diffusers_3m: false,
        }
    }
}

impl DpmSolverPp {
    /// The order of this step: the predictions at hand, capped at the end of a run.
    fn step_order(&self, h: &History) -> usize {
        let mut p = self.order.min(h.points.len());
        if self.lower_order_final && h.steps < 15 {
            p = p.min(h.remaining());
        }
        p
    }

    fn advance(
        &self,
        ctx: &mut StepCtx,
        h: &mut History,
        z_t: Batch,
        t: f64,
        s: f64,
    ) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        let sch = ctx.schedule;
        let (lt, ls) = (half_logsnr(sch, t), half_logsnr(sch, s));
        h.push(Point {
            t,
            lambda: lt,
            x_hat: x_hat.clone(),
        });
        // An infinite step (from lambda = -inf or to +inf) is first order, see multistep.rs.
        let hstep = ls - lt;
        let p = if hstep.is_finite() {
            self.step_order(h)
        } else {
            1
        };
        h.done += 1;
        let ((_, sig_t), (a_s, sig_s)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
        let em = (-hstep).exp_m1(); // e^{-h} - 1, in (-1, 0]
        let cz = sig_s / sig_t;
        let a = -a_s * em; // alpha_s (1 - e^{-h}): the DDIM coefficient of x_hat
        let m = |i: usize| &h.points[i].x_hat;
        let r = |i: usize| (h.points[i - 1].lambda - h.points[i].lambda) / hstep;
        Ok(match p {
            1 => combine(&[(cz, &z_t), (a, &x_hat)]),
            // D = m0 + (m0 - m1) / (2 r0).
            2 => {
                let r0 = r(1);
                combine(&[
                    (cz, &z_t),
                    (a * (1.0 + 0.5 / r0), m(0)),
                    (-a * 0.5 / r0, m(1)),
                ])
            }
            // a D0 + b D1 + c D2 with D1 = (1 + k) D1_0 - k D1_1 ~ h x_hat',
            // D2 = q (D1_0 - D1_1) ~ h^2 x_hat'', D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1.
            _ => {
                let (r0, r1) = (r(1), r(2));
                let b = a_s * (em / hstep + 1.0);
                let c = -a_s * ((em + hstep) / (hstep * hstep) - 0.5);
                let d2 = if self.diffusers_3m { 1.0 } else { 2.0 };
                let (k, q) = (r0 / (r0 + r1), d2 / (r0 + r1));
                let (d10, d11) = (b * (1.0 + k) + c * q, -b * k - c * q);
                combine(&[
                    (cz, &z_t),
                    (a + d10 / r0, m(0)),
                    (-d10 / r0 + d11 / r1, m(1)),
                    (-d11 / r1, m(2)),
                ])
            }
        })
    }
}

#[typetag::serde(name = "dpm-solver++")]
impl Integrator for DpmSolverPp {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        self.advance(ctx, &mut History::new(&[t, s], self.order), z_t, t, s)
    }

    fn new_state(&self, grid: &[f64]) -> Option<Box<dyn RunState>> {
        Some(Box::new(History::new(grid, self.order)))
    }

    fn step_in_run(
        &self,
        ctx: &mut StepCtx,
        state: Option<&mut dyn RunState>,
        z_t: Batch,
        t: f64,
        s: f64,
    ) -> anyhow::Result<Batch> {
        let h = run_state::<History>(state, "dpm-solver++")?;
        self.advance(ctx, h, z_t, t, s)
    }
}

register_plugin!(
    INTEGRATOR,
    "dpm-solver++",
    DpmSolverPp,
    "DPM-Solver++ multistep (Lu et al. 2022), data prediction: deterministic, order 1-3, 1 NFE per step"
);
