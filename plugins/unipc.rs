//! UniPC (Zhao et al. 2023) in its data-prediction form, following diffusers'
//! `UniPCMultistepScheduler`: a multistep predictor (UniP-p, exponential integrator in
//! lambda = ln(alpha/sigma) with B(h) = h for `bh1` or e^h - 1 for `bh2`) and a corrector (UniC-p)
//! that redoes the last step with the prediction at its end point. That prediction is the one the
//! next step evaluates anyway, so the corrector costs no evaluation: step k first corrects its
//! starting point z_t with x_hat(z_t), then predicts from the corrected point. The run's last
//! step is not corrected. As in diffusers, the order ramps up over the first steps and, with
//! `lower_order_final`, is at most the number of steps left; a step to sigma_s = 0 is first order
//! (it returns x_hat).

use fewstep::config::one_to_three;
use fewstep::integrator::multistep::{combine, half_logsnr, History, Point};
use fewstep::integrator::{run_state, Integrator, RunState, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use nalgebra::{DMatrix, DVector};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// B(h) of the update, UniPC's two variants.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Bh1,
    Bh2,
}

/// UniPC: deterministic, 1 NFE per step.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct UniPc {
    /// Order p of the predictor, 1 to 3; with the corrector the method is of order p + 1.
    #[serde(default = "order", deserialize_with = "one_to_three")]
    pub order: usize,
    /// B(h): "bh1" = h (the paper's choice for unconditional sampling), "bh2" = e^h - 1
    /// (diffusers' default).
    #[serde(default = "variant")]
    pub variant: Variant,
    /// Correct every step but the last with UniC (free: it reuses the next step's evaluation).
    #[serde(default = "yes")]
    pub corrector: bool,
    /// Cap the order at the number of steps left (diffusers' `lower_order_final`).
    #[serde(default = "yes")]
    pub lower_order_final: bool,
}

fn order() -> usize {
    2
}

fn variant() -> Variant {
    Variant::Bh2
}

fn yes() -> bool {
    true
}

impl Default for UniPc {
    fn default() -> Self {
        UniPc {
            order: order(),
            variant: variant(),
            corrector: yes(),
            lower_order_final: yes(),
        }
    }
}

/// The run: its predictions, and where the last predictor started (for the corrector).
#[derive(Clone)]
pub struct UniPcState {
    history: History,
    last: Option<Last>,
}

/// The starting point of the last predictor step and its order.
#[derive(Clone)]
struct Last {
    t: f64,
    z: Batch,
    order: usize,
}

/// The weights both UniP and UniC apply to a step of size `h` in lambda with earlier points at
/// relative offsets `rks` (their lambda minus the step's start, over h): R_ij = rks_j^i and
/// b_i = i! phi_{i+1}(-h) / B(h) as diffusers forms them, with the extra node 1 appended to rks.
/// Returns (h phi_1 = e^{-h} - 1, B(h), R, b).
fn weights(
    variant: Variant,
    h: f64,
    rks: &[f64],
    p: usize,
) -> (f64, f64, DMatrix<f64>, DVector<f64>) {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = match variant {
        Variant::Bh1 => hh,
        Variant::Bh2 => h_phi_1,
    };
    let mut nodes = rks.to_vec();
    nodes.push(1.0);
    let mut r = DMatrix::zeros(p, nodes.len());
    let mut b = DVector::zeros(p);
    let (mut h_phi_k, mut factorial) = (h_phi_1 / hh - 1.0, 1.0);
    for i in 1..=p {
        for (j, rk) in nodes.iter().enumerate() {
            r[(i - 1, j)] = rk.powi(i as i32 - 1);
        }
        b[i - 1] = h_phi_k * factorial / b_h;
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    (h_phi_1, b_h, r, b)
}

/// Solves the small system R rho = b (R is a Vandermonde matrix of distinct nodes).
fn solve(r: DMatrix<f64>, b: DVector<f64>) -> anyhow::Result<Vec<f64>> {
    r.lu()
        .solve(&b)
        .map(|v| v.iter().copied().collect())
        .ok_or_else(|| {
            anyhow::anyhow!("unipc: singular step weights (repeated log-SNR in the grid?)")
        })
}

impl UniPc {
    /// UniP-p from the newest point of the history (time t, sample z) to time s.
    fn predict(
        &self,
        ctx: &StepCtx,
        h: &History,
        z: &Batch,
        t: f64,
        s: f64,
        p: usize,
    ) -> anyhow::Result<Batch> {
        let sch = ctx.schedule;
        let ((_, sig_t), (a_s, sig_s)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
        let l0 = h.points[0].lambda;
        let step = half_logsnr(sch, s) - l0;
        let rks: Vec<f64> = (1..p).map(|i| (h.points[i].lambda - l0) / step).collect();
        let (h_phi_1, b_h, r, b) = weights(self.variant, step, &rks, p);
        let rhos = match p {
            1 => vec![],
            // diffusers' simplification for order 2.
            2 => vec![0.5],
            _ => solve(
                r.view((0, 0), (p - 1, p - 1)).into_owned(),
                b.rows(0, p - 1).into_owned(),
            )?,
        };
        // x_s = (sigma_s/sigma_t) z - alpha_s h_phi_1 m0 - alpha_s B(h) sum_k rho_k (m_k - m0)/r_k.
        let mut terms = vec![(sig_s / sig_t, z), (-a_s * h_phi_1, &h.points[0].x_hat)];
        for (k, (rho, rk)) in rhos.iter().zip(&rks).enumerate() {
            let c = -a_s * b_h * rho / rk;
            terms.push((c, &h.points[k + 1].x_hat));
            terms[1].0 -= c;
        }
        Ok(combine(&terms))
    }

    /// UniC-p: the last step (from `last` to time t, where the prediction is `x_hat_t`) redone
    /// with x_hat_t; the history's newest point is still the last step's start.
    fn correct(
        &self,
        ctx: &StepCtx,
        h: &History,
        last: &Last,
        x_hat_t: &Batch,
        t: f64,
    ) -> anyhow::Result<Batch> {
        let sch = ctx.schedule;
        let p = last.order;
        let ((_, sig_0), (a_t, sig_t)) = (sch.alpha_sigma(last.t), sch.alpha_sigma(t));
        let l0 = h.points[0].lambda;
        let step = half_logsnr(sch, t) - l0;
        let rks: Vec<f64> = (1..p).map(|i| (h.points[i].lambda - l0) / step).collect();
        let (h_phi_1, b_h, r, b) = weights(self.variant, step, &rks, p);
        let rhos = if p == 1 { vec![0.5] } else { solve(r, b)? };
        // x_t = (sigma_t/sigma_0) z_0 - alpha_t h_phi_1 m0
        //       - alpha_t B(h) (sum_k rho_k (m_k - m0)/r_k + rho_p (x_hat_t - m0)).
        let c_t = -a_t * b_h * rhos[p - 1];
        let mut terms = vec![
            (sig_t / sig_0, &last.z),
            (-a_t * h_phi_1 - c_t, &h.points[0].x_hat),
            (c_t, x_hat_t),
        ];
        for (k, (rho, rk)) in rhos.iter().zip(&rks).enumerate() {
            let c = -a_t * b_h * rho / rk;
            terms.push((c, &h.points[k + 1].x_hat));
            terms[1].0 -= c;
        }
        Ok(combine(&terms))
    }

    fn advance(
        &self,
        ctx: &mut StepCtx,
        st: &mut UniPcState,
        z_t: Batch,
        t: f64,
        s: f64,
    ) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        let lt = half_logsnr(ctx.schedule, t);
        let z_t = match st.last.take() {
            Some(last) if self.corrector && lt.is_finite() => {
                self.correct(ctx, &st.history, &last, &x_hat, t)?
            }
            _ => z_t,
        };
        st.history.push(Point {
            t,
            lambda: lt,
            x_hat: x_hat.clone(),
        });
        let finite = (half_logsnr(ctx.schedule, s) - lt).is_finite();
        let mut p = self.order.min(st.history.points.len());
        if self.lower_order_final {
            p = p.min(st.history.remaining());
        }
        st.history.done += 1;
        if !finite {
            // From lambda = -inf or to +inf: the DDIM step, and nothing to correct after it.
            let sch = ctx.schedule;
            let ((_, sig_t), (a_s, sig_s)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
            let em = (half_logsnr(sch, t) - half_logsnr(sch, s)).exp_m1();
            return Ok(combine(&[(sig_s / sig_t, &z_t), (-a_s * em, &x_hat)]));
        }
        let z_s = self.predict(ctx, &st.history, &z_t, t, s, p)?;
        st.last = Some(Last {
            t,
            z: z_t,
            order: p,
        });
        Ok(z_s)
    }
}

#[typetag::serde(name = "unipc")]
impl Integrator for UniPc {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        let mut st = UniPcState {
            history: History::new(&[t, s], self.order),
            last: None,
        };
        self.advance(ctx, &mut st, z_t, t, s)
    }

    fn new_state(&self, grid: &[f64]) -> Option<Box<dyn RunState>> {
        Some(Box::new(UniPcState {
            history: History::new(grid, self.order),
            last: None,
        }))
    }

    fn step_in_run(
        &self,
        ctx: &mut StepCtx,
        state: Option<&mut dyn RunState>,
        z_t: Batch,
        t: f64,
        s: f64,
    ) -> anyhow::Result<Batch> {
        let st = run_state::<UniPcState>(state, "unipc")?;
        self.advance(ctx, st, z_t, t, s)
    }
}

register_plugin!(
    INTEGRATOR,
    "unipc",
    UniPc,
    "UniPC (Zhao et al. 2023), data prediction, predictor-corrector: deterministic, order 1-3 (+1 with the corrector), 1 NFE per step"
);
