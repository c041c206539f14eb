//! k-diffusion's `sample_lms`: the linear multistep (Adams-Bashforth) method on the
//! probability-flow ODE in the variance-exploding variables x = z/alpha, sigma_ve = sigma/alpha,
//! where it reads dx/dsigma_ve = eps_hat = (z - alpha x_hat)/sigma. The slope is extrapolated by
//! the Lagrange polynomial through the last `order` slopes (in sigma_ve) and integrated over the
//! step exactly (Gauss-Legendre; k-diffusion integrates numerically). The first steps use the
//! slopes at hand. A slope at sigma_ve = inf (alpha_t = 0, t = 1 of a cosine schedule) is not
//! kept: no polynomial reaches it; the step from there is Euler's, which is DDIM.

use fewstep::integrator::multistep::combine;
use fewstep::integrator::{run_state, Integrator, RunState, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// LMS: deterministic, 1 NFE per step.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Lms {
    /// Slopes the polynomial goes through, 1 (Euler, i.e. DDIM) to 4 (k-diffusion's default).
    #[serde(default = "order", deserialize_with = "one_to_four")]
    pub order: usize,
}

fn order() -> usize {
    4
}

fn one_to_four<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match <usize as Deserialize>::deserialize(d)? {
        n @ 1..=4 => Ok(n),
        n => Err(serde::de::Error::custom(format!(
            "expected an order of 1 to 4, got {n}"
        ))),
    }
}

impl Default for Lms {
    fn default() -> Self {
        Lms { order: order() }
    }
}

/// The latest slopes of a run, newest first: (sigma_ve, eps_hat).
#[derive(Clone, Default)]
pub struct Slopes(VecDeque<(f64, Batch)>);

/// int_a^b prod_{k != j} (u - nodes_k)/(nodes_j - nodes_k) du, by 4-point Gauss-Legendre
/// (exact for the polynomials of degree <= 3 that order <= 4 gives).
fn lagrange_integral(nodes: &[f64], j: usize, a: f64, b: f64) -> f64 {
    const X: [f64; 4] = [
        -0.861_136_311_594_052_6,
        -0.339_981_043_584_856_3,
        0.339_981_043_584_856_3,
        0.861_136_311_594_052_6,
    ];
    const W: [f64; 4] = [
        0.347_854_845_137_453_9,
        0.652_145_154_862_546_1,
        0.652_145_154_862_546_1,
        0.347_854_845_137_453_9,
    ];
    let (mid, half) = (0.5 * (a + b), 0.5 * (b - a));
    X.iter()
        .zip(W)
        .map(|(x, w)| {
            let u = mid + half * x;
            let l: f64 = (0..nodes.len())
                .filter(|&k| k != j)
                .map(|k| (u - nodes[k]) / (nodes[j] - nodes[k]))
                .product();
            w * half * l
        })
        .sum()
}

impl Lms {
    fn advance(
        &self,
        ctx: &mut StepCtx,
        slopes: &mut Slopes,
        z_t: Batch,
        t: f64,
        s: f64,
    ) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        let sch = ctx.schedule;
        let ((a_t, sig_t), (a_s, sig_s)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
        if a_t == 0.0 {
            // Euler from sigma_ve = inf: z_s = alpha_s x_hat + sigma_s z_t / sigma_t (DDIM).
            return Ok(combine(&[(a_s, &x_hat), (sig_s / sig_t, &z_t)]));
        }
        let eps = combine(&[(1.0 / sig_t, &z_t), (-a_t / sig_t, &x_hat)]);
        slopes.0.push_front((sig_t / a_t, eps));
        slopes.0.truncate(self.order);
        let nodes: Vec<f64> = slopes.0.iter().map(|(sv, _)| *sv).collect();
        let (from, to) = (sig_t / a_t, sig_s / a_s);
        // z_s = alpha_s (z_t/alpha_t + sum_j c_j eps_j) with sum_j c_j = to - from (the Lagrange
        // basis sums to 1), formed as DDIM (the j = 0 slope over the whole step) plus
        // alpha_s sum_{j>0} c_j (eps_j - eps_0): z_t/alpha_t itself would cancel badly in f32
        // where alpha_t is small.
        let (ddim_x, ddim_z) = (a_s - a_t * sig_s / sig_t, sig_s / sig_t);
        let mut terms = vec![(ddim_z, &z_t), (ddim_x, &x_hat), (0.0, &slopes.0[0].1)];
        for (j, (_, e)) in slopes.0.iter().enumerate().skip(1) {
            let c = a_s * lagrange_integral(&nodes, j, from, to);
            terms.push((c, e));
            terms[2].0 -= c;
        }
        Ok(combine(&terms))
    }
}

#[typetag::serde(name = "lms")]
impl Integrator for Lms {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        self.advance(ctx, &mut Slopes::default(), z_t, t, s)
    }

    fn new_state(&self, _grid: &[f64]) -> Option<Box<dyn RunState>> {
        Some(Box::new(Slopes::default()))
    }

    fn step_in_run(
        &self,
        ctx: &mut StepCtx,
        state: Option<&mut dyn RunState>,
        z_t: Batch,
        t: f64,
        s: f64,
    ) -> anyhow::Result<Batch> {
        let slopes = run_state::<Slopes>(state, "lms")?;
        self.advance(ctx, slopes, z_t, t, s)
    }
}

register_plugin!(
    INTEGRATOR,
    "lms",
    Lms,
    "k-diffusion's linear multistep sampler (Adams-Bashforth in sigma/alpha): deterministic, order 1-4, 1 NFE per step"
);
