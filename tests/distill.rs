//! Distillation objectives against closed forms: the annealed teacher grid, Algorithm 1's
//! reductions (eq. 8 at a segment's last step, eq. 9 for CT with one teacher step per segment),
//! multistep CD on Gaussian data where the exact flow map is the zero-loss student, progressive
//! distillation's two-step target, and the points where a naive implementation produces NaN.

mod common;

use anyhow::Result;
use common::{per_row, schedule, Gaussian};
use dfdx::prelude::*;
use fewstep::config::{plugin_from_toml, to_toml};
use fewstep::data::Mixture;
use fewstep::denoiser::{Denoiser, Level};
use fewstep::denoiser::{Student, TapedBatch};
use fewstep::integrator::{ddim_step_rows, Integrator, StepCtx, TeacherStep};
use fewstep::objective::multistep::{teacher_steps, Draws, Flavour, Grid, Slot, XVarSource};
use fewstep::objective::{DistillObjective, ObjectiveCtx, Round};
use fewstep::plugins::gmm::GmmDenoiser;
use fewstep::plugins::multistep_consistency::Multistep;
use fewstep::plugins::progressive::Progressive;
use fewstep::schedule::Schedule;
use fewstep::seed::seeded;
use fewstep::tensor::{batch_from_vec, normal, seeded_device, Batch, Dev};
use serde::{Deserialize, Serialize};
use std::f64::consts::FRAC_PI_2;

const MEAN: [f64; 3] = [1.0, -0.5, 0.25];
const STD: f64 = 0.5;

fn gaussian(dev: &Dev) -> Gaussian {
    Gaussian {
        dev: dev.clone(),
        mean: MEAN.to_vec(),
        std: STD,
    }
}

/// Samples of the Gaussian data.
fn data(dev: &Dev, rows: usize) -> Batch {
    let e = normal(dev, rows, MEAN.len()).as_vec();
    let v = e
        .iter()
        .enumerate()
        .map(|(k, e)| (MEAN[k % 3] + STD * f64::from(*e)) as f32)
        .collect();
    batch_from_vec(dev, v, rows, MEAN.len())
}

/// A student made of a closed-form denoiser plus a trainable bias: its taped prediction carries
/// the tape of z, and the bias's gradient is d loss / d x_hat summed over the batch.
struct Probe<D> {
    inner: D,
    bias: Tensor<(usize,), f32, Dev>,
}

impl<D: Denoiser> Probe<D> {
    fn new(dev: &Dev, inner: D, bias: f32) -> Self {
        let d = inner.dim();
        Probe {
            inner,
            bias: dev.tensor_from_vec(vec![bias; d], (d,)),
        }
    }
}

impl<D: Denoiser> Denoiser for Probe<D> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        let shape = *z.shape();
        Ok(self.inner.denoise(z, level)? + self.bias.clone().broadcast_like::<_, Axis<0>>(&shape))
    }
}

impl<D: Denoiser> Student for Probe<D> {
    fn denoise_taped(&self, z: TapedBatch, level: &Level) -> Result<TapedBatch> {
        let (z, tape) = z.split_tape();
        let shape = *z.shape();
        let bias = self.bias.retaped::<OwnedTape<f32, Dev>>();
        Ok(self.inner.denoise(&z, level)?.put_tape(tape)
            + bias.broadcast_like::<_, Axis<0>>(&shape))
    }
}

/// A target network whose output must not matter (it is multiplied by an exact 0).
struct Garbage;

impl Denoiser for Garbage {
    fn dim(&self) -> usize {
        MEAN.len()
    }

    fn denoise(&self, z: &Batch, _: &Level) -> Result<Batch> {
        Ok(z.clone() * 0.0 + 1e3)
    }
}

/// The zero-loss S-step consistency student for Gaussian data (cosine schedule): the x whose DDIM
/// step from z_t to the segment start t_step lands where the probability-flow ODE does,
/// x = m + (rho - r)/(alpha_ts - alpha_t r) (z - alpha_t m), r = sigma_ts/sigma_t, rho the
/// ODE's contraction; at t_step = 0 it is the flow map to the data.
struct FlowMap {
    steps: usize,
}

impl FlowMap {
    fn x(&self, z: f64, m: f64, alpha: f64, sigma: f64) -> f64 {
        let t = sigma.atan2(alpha) / FRAC_PI_2;
        if t == 0.0 {
            return z;
        }
        let segment = ((t * self.steps as f64 - 1e-4).ceil() - 1.0).max(0.0);
        let (a0, s0) = cosine_as(segment / self.steps as f64);
        let v = STD * STD;
        let rho = (a0 * a0 * v + s0 * s0).sqrt() / (alpha * alpha * v + sigma * sigma).sqrt();
        let r = s0 / sigma;
        m + (rho - r) / (a0 - alpha * r) * (z - alpha * m)
    }
}

fn cosine_as(t: f64) -> (f64, f64) {
    schedule("name = \"cosine\"").alpha_sigma(t)
}

impl Denoiser for FlowMap {
    fn dim(&self) -> usize {
        MEAN.len()
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        let (n, d) = *z.shape();
        let (a, s) = (per_row(&level.alpha, n), per_row(&level.sigma, n));
        let zv = z.as_vec();
        let out = (0..n * d)
            .map(|k| self.x(f64::from(zv[k]), MEAN[k % d], a[k / d], s[k / d]) as f32)
            .collect();
        Ok(batch_from_vec(z.device(), out, n, d))
    }
}

/// A perfect teacher step: the Gaussian data's probability-flow ODE solved exactly.
#[derive(Serialize, Deserialize, Debug)]
struct ExactFlow {}

#[typetag::serde(name = "test-exact-flow")]
impl Integrator for ExactFlow {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> Result<Batch> {
        let n = z_t.shape().0;
        self.teacher_step(TeacherStep {
            dev: ctx.dev,
            schedule: ctx.schedule,
            x_hat: &z_t,
            z_t: &z_t,
            t: &vec![t; n],
            s: &vec![s; n],
            x_var: None,
        })
    }

    fn teacher_step(&self, a: TeacherStep) -> Result<Batch> {
        let (n, d) = *a.z_t.shape();
        let g = gaussian(a.dev);
        let z = a.z_t.as_vec();
        let out = (0..n)
            .flat_map(|i| g.flow(a.schedule, &z[i * d..(i + 1) * d], a.t[i], a.s[i]))
            .map(|v| v as f32)
            .collect();
        Ok(batch_from_vec(a.dev, out, n, d))
    }
}

/// The pieces of one loss evaluation.
struct Setup<'a> {
    dev: &'a Dev,
    sch: &'a dyn Schedule,
    student: &'a dyn Student,
    target: &'a dyn Denoiser,
    teacher: Option<&'a dyn Denoiser>,
}

impl Setup<'_> {
    fn run<R>(&self, seed: u64, iteration: u64, f: impl FnOnce(&mut ObjectiveCtx) -> R) -> R {
        let mut rng = seeded(seed);
        let mut ctx = ObjectiveCtx::new(
            self.dev,
            self.sch,
            self.student,
            self.target,
            self.teacher,
            iteration,
            &mut rng,
            Gradients::leaky(),
        );
        f(&mut ctx)
    }
}

fn multistep(steps: usize, n0: usize, n1: usize, integrator: &str) -> Multistep {
    Multistep {
        student_steps: steps,
        teacher_steps_start: n0,
        teacher_steps_end: n1,
        teacher_integrator: common::integrator(&format!("name = \"{integrator}\"")),
        ..Multistep::default()
    }
}

/// Host f64 rows of a batch.
fn rows64(b: &Batch) -> Vec<Vec<f64>> {
    let d = b.shape().1;
    b.as_vec()
        .chunks(d)
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn annealed_teacher_steps_and_grid_bookkeeping() {
    // N(i) = exp(ln 64 + clip(i/I, 0, 1)(ln 1280 - ln 64)): exact endpoints, geometric midpoint.
    assert_eq!(teacher_steps(64, 1280, 100_000, 0), 64.0);
    assert_eq!(teacher_steps(64, 1280, 100_000, 100_000), 1280.0);
    assert_eq!(teacher_steps(64, 1280, 100_000, 250_000), 1280.0);
    assert!(
        rel(
            teacher_steps(64, 1280, 100_000, 50_000),
            (64.0f64 * 1280.0).sqrt()
        ) < 1e-12
    );
    let n: Vec<f64> = (0..=100)
        .map(|k| teacher_steps(64, 1280, 100_000, k * 1000))
        .collect();
    assert!(n.windows(2).all(|w| w[1] > w[0]), "{n:?}");
    for i in [0, 7, 1_000_000] {
        assert_eq!(teacher_steps(256, 256, 100_000, i), 256.0, "constant N");
        assert_eq!(teacher_steps(64, 1280, 0, i), 1280.0, "I = 0");
    }

    // N_ps = round(N/S) and T = N_ps S, which is not N (pitfall 4).
    let g = |n: f64, s: usize| {
        let g = Grid::new(n, s);
        (g.per_segment, g.total())
    };
    assert_eq!(g(64.0, 8), (8, 64));
    assert_eq!(g(100.0, 8), (13, 104));
    assert_eq!(g(1280.0, 16), (80, 1280));
    assert_eq!(g(3.0, 8), (1, 8), "more student than teacher steps");
    let ms = Multistep::default();
    assert_eq!(ms.grid(0), Grid::new(64.0, 8));
    let mid = ms.grid(50_000);
    assert_eq!((mid.per_segment, mid.total()), (36, 288), "N = 286.2");
    assert_eq!(ms.grid(100_000).total(), 1280);
    // A loss draws on the grid of its iteration.
    let dev = seeded_device(0);
    let sch = schedule("name = \"cosine\"");
    let student = Probe::new(&dev, gaussian(&dev), 0.0);
    let setup = Setup {
        dev: &dev,
        sch: sch.as_ref(),
        student: &student,
        target: &student,
        teacher: None,
    };
    for (i, total) in [(0, 64), (50_000, 288), (100_000, 1280)] {
        let draws = setup.run(0, i, |ctx| ms.random_draws(ctx, 4, 3));
        assert_eq!(draws.grid.total(), total);
    }

    // Integer numerators: s == t_step exactly iff n_rel = 1; t = 1 and s = 0 are hit exactly.
    let grid = Grid {
        student_steps: 4,
        per_segment: 5,
    };
    for step in 0..4 {
        for n_rel in 1..=5 {
            let (t, s, t_step) = grid.times(Slot { step, n_rel });
            assert_eq!(t_step, step as f64 / 4.0);
            assert_eq!(s == t_step, n_rel == 1, "step {step} n_rel {n_rel}");
            assert!((t - s - 1.0 / 20.0).abs() < 1e-15);
            assert!(t_step < t && t <= t_step + 0.25 + 1e-15);
        }
    }
    assert_eq!(grid.times(Slot { step: 3, n_rel: 5 }).0, 1.0);
    assert_eq!(grid.times(Slot { step: 0, n_rel: 1 }), (0.05, 0.0, 0.0));
    let mut rng = seeded(3);
    let mut seen = [[0usize; 5]; 4];
    for _ in 0..4000 {
        let slot = grid.random_slot(&mut rng);
        seen[slot.step][slot.n_rel - 1] += 1;
    }
    // Uniform over the 20 slots: each ~200 times.
    assert!(
        seen.iter().flatten().all(|&c| (140..260).contains(&c)),
        "{seen:?}"
    );
}

#[test]
fn last_step_of_a_segment_is_eq8() {
    let dev = seeded_device(1);
    let sch = schedule("name = \"cosine\"");
    let teacher = gaussian(&dev);
    let student = Probe::new(&dev, gaussian(&dev), 0.05);
    let obj = multistep(4, 24, 24, "addim");
    let grid = obj.grid(0);
    assert_eq!(grid.per_segment, 6);
    let rows = 16;
    let x = data(&dev, rows);
    let draws = || Draws {
        grid,
        slots: (0..rows)
            .map(|i| Slot {
                step: i % 4,
                n_rel: 1,
            })
            .collect(),
        eps: normal(&seeded_device(2), rows, 3),
    };
    let loss = |target: &dyn Denoiser| {
        let setup = Setup {
            dev: &dev,
            sch: sch.as_ref(),
            student: &student,
            target,
            teacher: Some(&teacher),
        };
        let p = setup.run(0, 0, |ctx| {
            obj.prepare(ctx, &x, Flavour::Distillation, &draws())
                .unwrap()
        });
        let l = setup.run(0, 0, |ctx| {
            obj.loss_with(ctx, &x, Flavour::Distillation, &draws())
                .unwrap()
                .array()
        });
        (p, f64::from(l))
    };
    // The target network's prediction f(z_s, s) is not used: DDIM_{s -> s} is the identity.
    let (p, with_garbage) = loss(&Garbage);
    let (_, with_student) = loss(&student);
    assert_eq!(with_garbage, with_student);

    // Eq. 8: || f(z_t, t) - invDDIM_{t -> s}(z_s, z_t) || with z_s the aDDIM teacher step.
    let times = &p.times;
    let x_teacher = teacher.denoise(&p.z_t, &p.level_t).unwrap();
    let xv = fewstep::objective::multistep::x_var(XVarSource::Example, 0.75, &x_teacher, &x);
    let z_s = obj
        .teacher_integrator
        .teacher_step(TeacherStep {
            dev: &dev,
            schedule: sch.as_ref(),
            x_hat: &x_teacher,
            z_t: &p.z_t,
            t: &times.t,
            s: &times.s,
            x_var: xv.as_ref(),
        })
        .unwrap();
    let x_hat = rows64(&student.denoise(&p.z_t, &p.level_t).unwrap());
    let (zs, zt, tgt) = (rows64(&z_s), rows64(&p.z_t), rows64(&p.x_target));
    let mut want = 0.0;
    for i in 0..rows {
        let ((at, st), (as_, ss)) = (sch.alpha_sigma(times.t[i]), sch.alpha_sigma(times.s[i]));
        let r = ss / st;
        let mut sq = 0.0;
        for j in 0..3 {
            let inv = (zs[i][j] - r * zt[i][j]) / (as_ - at * r);
            assert!(
                (inv - tgt[i][j]).abs() < 1e-4,
                "row {i}: {inv} vs {}",
                tgt[i][j]
            );
            sq += (x_hat[i][j] - inv).powi(2);
        }
        let w = sch.snr(times.t[i]) + 1.0;
        want += w * ((sq + 1e-8).sqrt() - 1e-4) / rows as f64;
    }
    assert!(
        rel(with_garbage, want) < 1e-4,
        "{with_garbage} vs eq. 8 {want}"
    );
}

#[test]
fn ct_with_one_teacher_step_per_segment_is_the_diffusion_loss() {
    let dev = seeded_device(4);
    let sch = schedule("name = \"cosine\"");
    let student = Probe::new(&dev, gaussian(&dev), -0.1);
    let rows = 64;
    let x = data(&dev, rows);
    for steps in [16, 1280] {
        let obj = multistep(steps, steps, steps, "addim");
        let setup = Setup {
            dev: &dev,
            sch: sch.as_ref(),
            student: &student,
            target: &Garbage,
            teacher: None,
        };
        let (draws, p, loss) = setup.run(5, 0, |ctx| {
            let draws = obj.random_draws(ctx, rows, 3);
            let p = obj.prepare(ctx, &x, Flavour::Training, &draws).unwrap();
            let loss = obj.loss_with(ctx, &x, Flavour::Training, &draws).unwrap();
            (draws, p, loss)
        });
        assert_eq!(draws.grid.per_segment, 1);
        // With s = t_step, CT's target invDDIM_{t -> s}(DDIM_{t -> s}(x, z_t), z_t) is x, up to
        // f32 rounding amplified by 1/(alpha_s - alpha_t sigma_s/sigma_t) ~ T (pitfall 5).
        let err = common::max_diff(&p.x_target, &x);
        println!("S = N = {steps}: max |x_target - x| = {err:.2e}");
        assert!(err < if steps == 16 { 1e-5 } else { 1e-3 }, "{err}");

        // Eq. 9: w(t) pseudo-Huber(||x - x_hat||), and its gradient w.r.t. x_hat.
        let x_hat = rows64(&student.denoise(&p.z_t, &p.level_t).unwrap());
        let xs = rows64(&x);
        let mut want = 0.0;
        let mut grad = [0.0; 3];
        for i in 0..rows {
            let w = sch.snr(p.times.t[i]) + 1.0;
            let diff: Vec<f64> = (0..3).map(|j| x_hat[i][j] - xs[i][j]).collect();
            let norm = (diff.iter().map(|v| v * v).sum::<f64>() + 1e-8).sqrt();
            want += w * (norm - 1e-4) / rows as f64;
            for j in 0..3 {
                grad[j] += w * diff[j] / norm / rows as f64;
            }
        }
        let got = f64::from(loss.array());
        let grads = loss.backward();
        let g = grads.get(&student.bias).as_vec();
        println!("S = N = {steps}: loss {got} vs eq. 9 {want}; bias grad {g:?} vs {grad:?}");
        let tol = if steps == 16 { 1e-5 } else { 1e-3 };
        assert!(rel(got, want) < tol, "{got} vs {want}");
        for j in 0..3 {
            assert!(rel(f64::from(g[j]), grad[j]) < tol, "{g:?} vs {grad:?}");
        }
    }
}

/// Mean multistep CD loss on Gaussian data with a one-component `gmm` teacher.
fn cd_loss(
    student: &dyn Student,
    steps: usize,
    teacher_steps: usize,
    integrator: Box<dyn Integrator>,
) -> f64 {
    let dev = seeded_device(6);
    let sch = schedule("name = \"cosine\"");
    let mixture = Mixture::new(vec![1.0], MEAN.to_vec(), vec![STD], 3).unwrap();
    let teacher = GmmDenoiser::new(&dev, &mixture);
    let obj = Multistep {
        teacher_integrator: integrator,
        ..multistep(steps, teacher_steps, teacher_steps, "ddim")
    };
    let x = data(&dev, 2048);
    let setup = Setup {
        dev: &dev,
        sch: sch.as_ref(),
        student,
        target: student,
        teacher: Some(&teacher),
    };
    let l = setup.run(7, 0, |ctx| {
        obj.loss(ctx, &x, Flavour::Distillation).unwrap().array()
    });
    f64::from(l)
}

#[test]
fn cd_loss_vanishes_for_the_exact_flow_map() {
    let dev = seeded_device(8);
    let ddim = || common::integrator("name = \"ddim\"");
    let steps = 4;
    let flow = Probe::new(&dev, FlowMap { steps }, 0.0);
    let denoiser = Probe::new(&dev, gaussian(&dev), 0.0);
    // The exact denoiser E[x|z_t] is no consistency model: its loss is of order one.
    let baseline = cd_loss(&denoiser, steps, 64, ddim());
    // With a perfect ODE step as teacher the flow map's loss is rounding only.
    let exact = cd_loss(&flow, steps, 64, Box::new(ExactFlow {}));
    // With a DDIM teacher it is DDIM's integration error, which shrinks as N grows.
    let coarse = cd_loss(&flow, steps, 64, ddim());
    let fine = cd_loss(&flow, steps, 1280, ddim());
    println!("CD loss: E[x|z] {baseline:.3e}, flow map with exact ODE {exact:.3e}, with DDIM at N = 64 {coarse:.3e}, N = 1280 {fine:.3e}");
    assert!(baseline > 0.05, "{baseline}");
    assert!(exact < 1e-6 * baseline, "{exact}");
    // DDIM's local error times the weight SNR + 1 is large where t is small and N coarse.
    assert!(coarse < 0.5 * baseline, "{coarse}");
    assert!(fine < coarse / 100.0, "{fine} vs {coarse}");
}

#[test]
fn progressive_target_is_two_teacher_steps() {
    let dev = seeded_device(9);
    let sch = schedule("name = \"cosine\"");
    let teacher = gaussian(&dev);
    let student = Probe::new(&dev, gaussian(&dev), 0.0);
    let pd = Progressive {
        student_steps: 2,
        rounds: 2,
        iters_per_round: 100,
        teacher_integrator: common::integrator("name = \"addim\""),
        later_integrator: common::integrator("name = \"ddim\""),
        ..Progressive::default()
    };
    // Rounds: 8 teacher steps -> 4 -> 2; the last round goes on.
    let r = |i| pd.round_at(i);
    assert_eq!(
        r(99),
        Round {
            index: 0,
            start: 0,
            student_steps: 4,
            restart: true
        }
    );
    assert_eq!(
        r(100),
        Round {
            index: 1,
            start: 100,
            student_steps: 2,
            restart: true
        }
    );
    assert_eq!(r(10_000), r(100));
    assert_eq!(pd.round(150), Some(r(150)));
    assert_eq!(pd.student_steps(), Some(2));

    let rows = 12;
    let x = data(&dev, rows);
    let eps = normal(&dev, rows, 3);
    let setup = Setup {
        dev: &dev,
        sch: sch.as_ref(),
        student: &student,
        target: &student,
        teacher: Some(&teacher),
    };
    for round in [r(0), r(100)] {
        let n = round.student_steps;
        let ks: Vec<usize> = (0..rows).map(|i| 1 + i % n).collect();
        let p = setup.run(0, round.start, |ctx| {
            pd.prepare(ctx, &x, &round, &ks, &eps).unwrap()
        });
        let times = &p.times;
        for (i, &k) in ks.iter().enumerate() {
            let k = k as f64;
            assert_eq!(times.t[i], k / n as f64);
            assert_eq!(times.t_step[i], (k - 1.0) / n as f64);
            assert!((times.s[i] - (k - 0.5) / n as f64).abs() < 1e-15);
        }
        // One student DDIM step t -> t - 1/n lands on the two teacher steps.
        let mut z = p.z_t.clone();
        let integrator = if round.index == 0 {
            &pd.teacher_integrator
        } else {
            &pd.later_integrator
        };
        for (from, to) in [(&times.t, &times.s), (&times.s, &times.t_step)] {
            let xh = teacher
                .denoise(&z, &Level::per_row(&dev, sch.as_ref(), from))
                .unwrap();
            let xv = fewstep::objective::multistep::x_var(XVarSource::Example, 0.75, &xh, &x);
            z = integrator
                .teacher_step(TeacherStep {
                    dev: &dev,
                    schedule: sch.as_ref(),
                    x_hat: &xh,
                    z_t: &z,
                    t: from,
                    s: to,
                    x_var: xv.as_ref(),
                })
                .unwrap();
        }
        let student_step = ddim_step_rows(
            &dev,
            sch.as_ref(),
            p.x_target.clone(),
            p.z_t.clone(),
            &times.t,
            &times.t_step,
        );
        let err = common::max_diff(&student_step, &z);
        assert!(err < 1e-5, "round {}: {err}", round.index);

        // Round two's teacher step is DDIM: the target in closed form (Gaussian posterior mean
        // m + g (z - alpha m), two DDIM steps, invDDIM), on the host in f64.
        if round.index == 1 {
            let (zt, tgt) = (rows64(&p.z_t), rows64(&p.x_target));
            for i in 0..rows {
                let ts = [times.t[i], times.s[i], times.t_step[i]];
                let mut zz = zt[i].clone();
                for w in ts.windows(2) {
                    let ((a, s), (a2, s2)) = (sch.alpha_sigma(w[0]), sch.alpha_sigma(w[1]));
                    let (g, _) = teacher.gain_var(a, s);
                    for j in 0..3 {
                        let xh = MEAN[j] + g * (zz[j] - a * MEAN[j]);
                        zz[j] = a2 * xh + s2 / s * (zz[j] - a * xh);
                    }
                }
                let ((a, s), (a2, s2)) = (sch.alpha_sigma(ts[0]), sch.alpha_sigma(ts[2]));
                for j in 0..3 {
                    let want = (zz[j] - s2 / s * zt[i][j]) / (a2 - a * s2 / s);
                    assert!(
                        (tgt[i][j] - want).abs() < 1e-4,
                        "row {i}: {} vs {want}",
                        tgt[i][j]
                    );
                }
            }
        }
    }
}

#[test]
fn no_nan_at_the_pitfall_points() {
    let dev = seeded_device(10);
    let sch = schedule("name = \"cosine\"");
    let teacher = gaussian(&dev);
    // At initialisation the CD student is the teacher.
    let student = Probe::new(&dev, gaussian(&dev), 0.0);
    let setup = Setup {
        dev: &dev,
        sch: sch.as_ref(),
        student: &student,
        target: &student,
        teacher: Some(&teacher),
    };
    let rows = 8;
    let x = data(&dev, rows);
    let obj = multistep(8, 64, 64, "ddim");
    let grid = obj.grid(0);
    let eval = |slots: Vec<Slot>, obj: &Multistep| {
        let draws = Draws {
            grid,
            slots,
            eps: normal(&dev, rows, 3),
        };
        let loss = setup.run(0, 0, |ctx| {
            obj.loss_with(ctx, &x, Flavour::Distillation, &draws)
                .unwrap()
        });
        let value = loss.array();
        let g = loss.backward().get(&student.bias).as_vec();
        (value, g)
    };
    // s = t_step = 0: z_s = DDIM_{t->0}(x_hat, z_t) = x_hat and the target is x_hat itself, so
    // x_diff is exactly 0 (pitfall 1): loss 0 and gradient 0, not NaN.
    let (value, g) = eval(vec![Slot { step: 0, n_rel: 1 }; rows], &obj);
    assert_eq!(value, 0.0);
    assert_eq!(g, vec![0.0; 3]);
    // t = 1 (alpha = 0, log-SNR = -inf), the first step after t_step = 0, and mid-segment, with
    // both teacher steps.
    let slots: Vec<Slot> = (0..rows)
        .map(|i| match i % 4 {
            0 => Slot { step: 7, n_rel: 8 },
            1 => Slot { step: 0, n_rel: 2 },
            2 => Slot { step: 0, n_rel: 1 },
            _ => Slot { step: 3, n_rel: 4 },
        })
        .collect();
    for integrator in ["ddim", "addim"] {
        let obj = multistep(8, 64, 64, integrator);
        let (value, g) = eval(slots.clone(), &obj);
        assert!(
            value.is_finite() && g.iter().all(|v| v.is_finite()),
            "{integrator}: {value} {g:?}"
        );
    }
    // Progressive distillation at t = 1 and at t - 1/n = 0.
    let pd = Progressive {
        student_steps: 2,
        rounds: 1,
        ..Progressive::default()
    };
    let round = pd.round_at(0);
    let ks: Vec<usize> = (0..rows).map(|i| 1 + i % 2).collect();
    let loss = setup.run(0, 0, |ctx| {
        let p = pd
            .prepare(ctx, &x, &round, &ks, &normal(&dev, rows, 3))
            .unwrap();
        assert!(p.x_target.as_vec().iter().all(|v| v.is_finite()));
        pd.loss(ctx, &x).unwrap()
    });
    assert!(loss.array().is_finite());
    let g = loss.backward().get(&student.bias).as_vec();
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
}

#[test]
fn objective_configs_and_errors() {
    let obj = |toml: &str| plugin_from_toml::<Box<dyn DistillObjective>>(toml);
    let err = |toml: &str| match obj(toml) {
        Ok(v) => panic!("{toml} was accepted: {v:?}"),
        Err(e) => e.to_string(),
    };
    // `{ name = ... }` alone is the paper's setup, the same as the Rust defaults.
    let defaults: [(&str, Box<dyn DistillObjective>); 3] = [
        (
            "multistep-cd",
            Box::new(fewstep::plugins::multistep_consistency::MultistepCd::default()),
        ),
        (
            "multistep-ct",
            Box::new(fewstep::plugins::multistep_consistency::MultistepCt::default()),
        ),
        ("progressive", Box::new(Progressive::default())),
    ];
    for (name, default) in defaults {
        let parsed = obj(&format!("name = \"{name}\"")).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        assert_eq!(parsed.student_steps(), Some(8));
        // What a checkpoint records reads back the same.
        let again = obj(&to_toml(&parsed).unwrap()).unwrap();
        assert_eq!(format!("{again:?}"), format!("{parsed:?}"));
    }
    let cd =
        obj("name = \"multistep-cd\"\nstudent_steps = 2\n[teacher_integrator]\nname = \"ddim\"")
            .unwrap();
    assert!(format!("{cd:?}").contains("Ddim"), "{cd:?}");
    assert_eq!(cd.student_steps(), Some(2));
    assert_eq!(cd.round(5), None);

    assert!(err("name = \"multistep-cd\"\nstudnet_steps = 2").contains("studnet_steps"));
    assert!(err("name = \"multistep-ct\"\nstudent_steps = 0").contains(">= 1"));
    assert!(err("name = \"progressive\"\nrounds = 0").contains(">= 1"));
    assert!(err("name = \"multistep-cd\"\nhuber_eps = 0.0").contains("> 0"));
    let e = err("name = \"multistep-cd\"\nxvar_source = \"magic\"");
    assert!(e.contains("example") && e.contains("integrator"), "{e}");
    let e = err("name = \"multistep-cd\"\n[teacher_integrator]\nname = \"rk4\"");
    assert!(e.contains("addim") && e.contains("ddim"), "{e}");
    let e = err("name = \"multistep\"");
    for name in ["multistep-cd", "multistep-ct", "progressive"] {
        assert!(e.contains(name), "{e}");
    }

    // Errors at the first loss name the fix: a sampler that cannot teach, a missing teacher.
    let dev = seeded_device(11);
    let sch = schedule("name = \"cosine\"");
    let student = Probe::new(&dev, gaussian(&dev), 0.0);
    let teacher = gaussian(&dev);
    let x = data(&dev, 4);
    let first_loss = |toml: &str, teacher: Option<&dyn Denoiser>| {
        let setup = Setup {
            dev: &dev,
            sch: sch.as_ref(),
            student: &student,
            target: &student,
            teacher,
        };
        let o = obj(toml).unwrap();
        setup.run(0, 0, |ctx| o.loss(ctx, &x).map(|l| l.array()))
    };
    let heun = "name = \"multistep-cd\"\n[teacher_integrator]\nname = \"heun\"";
    let e = first_loss(heun, Some(&teacher)).unwrap_err().to_string();
    assert!(e.contains("cannot be a distillation teacher"), "{e}");
    for name in ["multistep-cd", "progressive"] {
        let e = first_loss(&format!("name = \"{name}\""), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a teacher"), "{e}");
    }
    // Consistency training needs none.
    assert!(first_loss("name = \"multistep-ct\"", None)
        .unwrap()
        .is_finite());
}

#[test]
fn progressive_rounds_from_a_fixed_first_teacher() {
    let pd = |s: usize| Progressive {
        student_steps: s,
        teacher_steps: Some(64),
        iters_per_round: 10,
        ..Progressive::default()
    };
    assert_eq!(pd(1).rounds(), 6);
    assert_eq!(pd(8).rounds(), 3);
    // The first round's teacher takes 64 steps whatever S is, the last round's student S.
    for s in [1, 2, 4, 8] {
        assert_eq!(pd(s).round_at(0).student_steps, 32);
        assert_eq!(pd(s).round_at(1000).student_steps, s);
    }
    // Every first teacher of S x 2^k steps (k >= 1) is valid; any other count would silently
    // become a different teacher (64 / 3 = 21 -> 4 rounds from 48 steps), so it is refused, as
    // is a start at S or below (no halving left), naming both fields and the valid counts.
    for s in [1, 2, 4, 8, 32] {
        assert!(pd(s).validate().is_ok(), "S = {s}");
    }
    for (s, valid) in [
        (3, "valid: 6, 12, 24, 48"),
        (64, "valid: 128, 256"),
        (128, "256"),
    ] {
        let e = format!("{:#}", pd(s).validate().unwrap_err());
        assert!(
            e.starts_with("teacher_steps: 64 is not student_steps = "),
            "{e}"
        );
        assert!(e.contains(&format!("student_steps = {s} ")), "{e}");
        assert!(e.contains(valid), "{e}");
    }
}
