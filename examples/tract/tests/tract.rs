//! TRACT as an out-of-tree plugin: the extended CLI lists it and distils a student with it end to
//! end, and its targets match closed forms: the teacher step alone when a segment holds one
//! teacher step, and on Gaussian data the exact flow map in every phase when teacher and
//! self-teacher are the exact flow maps of their own grids (the transitive closure).

use anyhow::Result;
use dfdx::prelude::*;
use fewstep::config::plugin_from_toml;
use fewstep::data::builtin::mixtures;
use fewstep::data::read_data;
use fewstep::denoiser::{Denoiser, Level};
use fewstep::denoiser::{Student, TapedBatch};
use fewstep::objective::multistep::Slot;
use fewstep::objective::{DistillObjective, ObjectiveCtx, Round};
use fewstep::plugins::gmm::GmmDenoiser;
use fewstep::schedule::Schedule;
use fewstep::seed::seeded;
use fewstep::tensor::{batch_from_vec, normal, seeded_device, Batch, Coef, Dev};
use fewstep_tract::Tract;
use std::f64::consts::FRAC_PI_2;
use std::path::Path;
use std::process::{Command, Output};

fn fewstep_tract(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fewstep-tract"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("fewstep-tract runs")
}

/// Runs a command that must succeed; returns its stderr.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = fewstep_tract(dir, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "fewstep-tract {args:?} failed:\n{err}"
    );
    err
}

#[test]
fn the_extended_cli_lists_the_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let out = fewstep_tract(dir.path(), &["list", "objective"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    // The crate's own objective beside the built-in ones, with its fields.
    for want in ["tract", "iters_per_phase", "multistep-cd", "progressive"] {
        assert!(listing.contains(want), "no `{want}` in\n{listing}");
    }
    let out = fewstep_tract(dir.path(), &["list", "integrator"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("midpoint"));
}

/// The student's samples: `n` finite rows of the data's dimension, and the NFE reported.
fn check_samples(dir: &Path, student: &str, n: usize, steps: usize) {
    let out = format!("{student}.h5");
    let err = ok(
        dir,
        &[
            "sample",
            "--checkpoint",
            student,
            "--n",
            &n.to_string(),
            "--out",
            &out,
        ],
    );
    assert!(err.contains(&format!("({steps} NFE each)")), "{err}");
    let samples = read_data(&dir.join(&out)).unwrap();
    assert_eq!(samples.shape, vec![n, 2]);
    assert!(samples.values.iter().all(|v| v.is_finite()));
}

#[test]
fn distils_a_two_step_student_from_a_trained_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &["data", "make", "ring8", "--n", "2000", "--out", "ring8.h5"],
    );
    ok(
        d,
        &[
            "train", "--data", "ring8.h5", "--steps", "60", "--batch", "64", "--out", "teacher",
        ],
    );
    let small = ["--steps", "40", "--batch", "64", "--teacher", "teacher"];

    // The objective by name, all its settings at their defaults.
    let mut args = vec!["distill", "--objective", "tract", "--student-steps", "2"];
    args.extend(small);
    args.extend(["--out", "student"]);
    ok(d, &args);
    assert!(d.join("student/ckpt-000000040.safetensors").exists());
    let config = std::fs::read_to_string(d.join("student/config.toml")).unwrap();
    assert!(config.contains("name = \"tract\""), "{config}");
    // 40 iterations stay in the first phase (128 -> 16 segments of the default 128 -> 16 -> 2),
    // so the checkpoint records the 16 steps that phase's student takes.
    check_samples(d, "student", 200, 16);

    // From a config file, with phases short enough that the run crosses into the second.
    let cfg = "[objective]\nname = \"tract\"\nteacher_steps = 16\nphases = 2\n\
               iters_per_phase = 20\n[objective.teacher_integrator]\nname = \"addim\"\n";
    std::fs::write(d.join("tract.toml"), cfg).unwrap();
    let mut args = vec!["distill", "--config", "tract.toml", "--student-steps", "2"];
    args.extend(small);
    args.extend(["--out", "phased"]);
    ok(d, &args);
    check_samples(d, "phased", 200, 2);
    // The second phase was taught by the student frozen when it began.
    assert!(d.join("phased/rounds/ckpt-000000020.safetensors").exists());

    // A misspelt setting is refused with the field named.
    std::fs::write(
        d.join("bad.toml"),
        "[objective]\nname = \"tract\"\nphase = 2\n",
    )
    .unwrap();
    let out = fewstep_tract(
        d,
        &["distill", "--config", "bad.toml", "--teacher", "teacher"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("phase"), "{err}");
}

#[test]
fn reproduce_scale_shortens_the_phases() {
    let mut t = Tract {
        iters_per_phase: 300,
        ..Tract::default()
    };
    t.scale_iterations(0.1);
    assert_eq!(t.iters_per_phase, 30);
    assert_eq!(
        t.round(45).unwrap().index,
        1,
        "phase 2 starts at iteration 30"
    );
    t.scale_iterations(1e-6);
    assert_eq!(t.iters_per_phase, 1, "never below one iteration");
}

#[test]
fn phases_shrink_from_the_teacher_steps_to_the_student_steps() {
    // The paper's CIFAR-10 schedule: 1024 -> 32 -> 1 in two phases.
    let paper = Tract {
        student_steps: 1,
        teacher_steps: 1024,
        phases: 2,
        iters_per_phase: 100,
        ..Tract::default()
    };
    assert_eq!(paper.factor(), 32);
    assert_eq!((paper.segments(0), paper.segments(1)), (32, 1));
    assert_eq!(
        (paper.teacher_steps_of(0), paper.teacher_steps_of(1)),
        (1024, 32)
    );
    for k in 0..2 {
        let grid = paper.grid(k);
        assert_eq!(
            (grid.student_steps, grid.per_segment),
            (paper.segments(k), 32)
        );
    }
    let phase = |index, start, student_steps| Round {
        index,
        start,
        student_steps,
        restart: false,
    };
    assert_eq!(paper.phase_at(0), phase(0, 0, 32));
    assert_eq!(paper.phase_at(99), phase(0, 0, 32));
    assert_eq!(paper.phase_at(100), phase(1, 100, 1));
    // The last phase goes on; the trainer reads the phases through `round`.
    assert_eq!(paper.phase_at(10_000), phase(1, 100, 1));
    assert_eq!(paper.round(150), Some(paper.phase_at(150)));
    assert_eq!(paper.student_steps(), Some(1));

    // One phase is Algorithm 1 with a fixed teacher grid: S segments of T/S steps.
    let one = Tract {
        student_steps: 4,
        teacher_steps: 64,
        phases: 1,
        ..Tract::default()
    };
    assert_eq!((one.segments(0), one.grid(0).per_segment), (4, 16));
    // More phases than the ratio supports: a factor of 1, every phase at S.
    let flat = Tract {
        student_steps: 8,
        teacher_steps: 8,
        phases: 3,
        ..Tract::default()
    };
    assert_eq!(
        (0..3).map(|k| flat.segments(k)).collect::<Vec<_>>(),
        [8, 8, 8]
    );

    // The config `{}` is the default; unknown keys and zero counts are refused.
    let t: Box<dyn DistillObjective> = plugin_from_toml("name = \"tract\"").unwrap();
    assert_eq!(format!("{t:?}"), format!("{:?}", Tract::default()));
    for bad in [
        "phase = 2",
        "phases = 0",
        "student_steps = 0",
        "iters_per_phase = 0",
    ] {
        let r: Result<Box<dyn DistillObjective>> =
            plugin_from_toml(&format!("name = \"tract\"\n{bad}"));
        assert!(r.is_err(), "{bad}");
    }
}

fn cosine() -> Box<dyn Schedule> {
    plugin_from_toml("name = \"cosine\"").unwrap()
}

/// A coefficient as one f64 per row.
fn per_row(c: &Coef, rows: usize) -> Vec<f64> {
    c.host_rows(rows)
}

const MEAN: [f64; 2] = [1.0, -0.5];
const STD: f64 = 0.5;

/// Rows of the Gaussian data N(MEAN, STD^2 I).
fn gaussian_data(dev: &Dev, rows: usize) -> Batch {
    let e = normal(dev, rows, 2).as_vec();
    let v = e
        .iter()
        .enumerate()
        .map(|(k, e)| (MEAN[k % 2] + STD * f64::from(*e)) as f32)
        .collect();
    batch_from_vec(dev, v, rows, 2)
}

/// The exact `steps`-segment consistency model of the Gaussian data under the cosine schedule:
/// the x whose DDIM step from z_t to the start t0 of t's segment lands where the probability-flow
/// ODE does. Along the ODE (z - alpha m) / sqrt(alpha^2 v + sigma^2) is constant (v = STD^2), so
/// x = m + (rho - r) / (alpha0 - alpha r) (z - alpha m), r = sigma0 / sigma, rho the ratio of
/// those square roots at t0 and t. As a student (no parameters) it carries z's tape through.
struct FlowMap {
    steps: usize,
}

impl FlowMap {
    fn x(&self, z: f64, m: f64, alpha: f64, sigma: f64) -> f64 {
        let t = sigma.atan2(alpha) / FRAC_PI_2;
        if t == 0.0 {
            return z;
        }
        // t = j/steps (up to f32 levels) is the top of segment j - 1.
        let segment = ((t * self.steps as f64 - 1e-4).ceil() - 1.0).max(0.0);
        let t0 = segment / self.steps as f64;
        let (a0, s0) = ((t0 * FRAC_PI_2).cos(), (t0 * FRAC_PI_2).sin());
        let v = STD * STD;
        let rho = (a0 * a0 * v + s0 * s0).sqrt() / (alpha * alpha * v + sigma * sigma).sqrt();
        let r = s0 / sigma;
        m + (rho - r) / (a0 - alpha * r) * (z - alpha * m)
    }
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

impl Student for FlowMap {
    fn denoise_taped(&self, z: TapedBatch, level: &Level) -> Result<TapedBatch> {
        let (z, tape) = z.split_tape();
        Ok(self.denoise(&z, level)?.put_tape(tape))
    }
}

/// A self-teacher whose output must not matter (DDIM from s to t_step = s multiplies it by 0).
struct Garbage;

impl Denoiser for Garbage {
    fn dim(&self) -> usize {
        2
    }

    fn denoise(&self, z: &Batch, _: &Level) -> Result<Batch> {
        Ok(z.clone() * 0.0 + 1e3)
    }
}

/// Runs `f` on a context with these models (at iteration `iteration`).
fn with_ctx<R>(
    dev: &Dev,
    sch: &dyn Schedule,
    student: &dyn Student,
    target: &dyn Denoiser,
    teacher: &dyn Denoiser,
    iteration: u64,
    f: impl FnOnce(&mut ObjectiveCtx) -> R,
) -> R {
    let mut rng = seeded(iteration);
    let mut ctx = ObjectiveCtx::new(
        dev,
        sch,
        student,
        target,
        Some(teacher),
        iteration,
        &mut rng,
        Gradients::leaky(),
    );
    f(&mut ctx)
}

fn max_rel_err(got: &Batch, want: &Batch) -> f64 {
    got.as_vec()
        .iter()
        .zip(want.as_vec())
        .map(|(g, w)| f64::from((g - w).abs()) / (1.0 + f64::from(w.abs())))
        .fold(0.0, f64::max)
}

/// Every slot of phase `k`'s grid, `reps` times over.
fn all_slots(tract: &Tract, k: usize, reps: usize) -> Vec<Slot> {
    let g = tract.grid(k);
    let one = (0..g.student_steps)
        .flat_map(|step| (1..=g.per_segment).map(move |n_rel| Slot { step, n_rel }));
    one.collect::<Vec<_>>().repeat(reps)
}

#[test]
fn with_one_teacher_step_per_segment_the_target_is_the_teacher_step() {
    let dev = seeded_device(1);
    let sch = cosine();
    let mixture = mixtures::mixture("ring8").unwrap();
    let teacher = GmmDenoiser::new(&dev, &mixture);
    let tract = Tract {
        student_steps: 4,
        teacher_steps: 4,
        phases: 1,
        ..Tract::default()
    };
    assert_eq!(tract.grid(0).per_segment, 1);
    let slots = all_slots(&tract, 0, 16);
    let x = batch_from_vec(
        &dev,
        mixtures::make("ring8", 64, 3).unwrap().data.values,
        64,
        2,
    );
    let eps = normal(&dev, 64, 2);
    let student = FlowMap { steps: 4 };
    let p = with_ctx(&dev, sch.as_ref(), &student, &Garbage, &teacher, 0, |ctx| {
        tract.prepare(ctx, &x, 0, &slots, &eps).unwrap()
    });
    // s = t_step: the self-teacher's jump is the identity, and invDDIM undoes the teacher's DDIM
    // step, leaving the teacher's own prediction at z_t.
    let want = teacher.denoise(&p.z_t, &p.level_t).unwrap();
    let err = max_rel_err(&p.x_target, &want);
    println!("one teacher step per segment: target vs teacher, max rel. error {err:.1e}");
    assert!(err < 1e-4, "{err}");
}

#[test]
fn with_exact_flow_maps_every_phase_targets_the_flow_map() {
    let dev = seeded_device(2);
    let sch = cosine();
    // 64 -> 16 -> 4 -> 1: a factor of 4 in each of three phases.
    let tract = Tract {
        student_steps: 1,
        teacher_steps: 64,
        phases: 3,
        iters_per_phase: 10,
        ..Tract::default()
    };
    assert_eq!((tract.factor(), tract.segments(0)), (4, 16));
    for k in 0..tract.phases {
        // Phase k's teacher is the exact model of its own grid (T_k segments), whose DDIM step
        // from a grid point t to the next one down is the exact ODE step.
        let teacher = FlowMap {
            steps: tract.teacher_steps_of(k),
        };
        let student = FlowMap {
            steps: tract.segments(k),
        };
        let iteration = k as u64 * tract.iters_per_phase + 3;
        assert_eq!(tract.phase_at(iteration).index, k);
        let slots = all_slots(&tract, k, 4);
        let rows = slots.len();
        let x = gaussian_data(&dev, rows);
        let eps = normal(&dev, rows, 2);
        let (p, loss) = with_ctx(
            &dev,
            sch.as_ref(),
            &student,
            &student,
            &teacher,
            iteration,
            |ctx| {
                let p = tract.prepare(ctx, &x, k, &slots, &eps).unwrap();
                (p, tract.loss(ctx, &x).unwrap().array())
            },
        );
        let want = student.denoise(&p.z_t, &p.level_t).unwrap();
        let err = max_rel_err(&p.x_target, &want);
        // E[x | z_t] is no few-step model: its loss on the same phase is of order one.
        let exact = posterior_mean_loss(&dev, sch.as_ref(), &tract, &teacher, iteration, &x);
        println!(
            "phase {k} ({} -> {} steps): target vs flow map {err:.1e}; loss {loss:.2e}, \
             E[x|z] {exact:.2e}",
            tract.teacher_steps_of(k),
            tract.segments(k)
        );
        assert!(err < 1e-4, "phase {k}: {err}");
        assert!(
            f64::from(loss) < 1e-6 * exact,
            "phase {k}: {loss} vs {exact}"
        );
    }
}

/// The loss of phase `iteration` with the exact posterior mean of the Gaussian data as student.
fn posterior_mean_loss(
    dev: &Dev,
    sch: &dyn Schedule,
    tract: &Tract,
    teacher: &dyn Denoiser,
    iteration: u64,
    x: &Batch,
) -> f64 {
    let mixture =
        fewstep::data::Mixture::new(vec![1.0], MEAN.to_vec(), vec![STD], MEAN.len()).unwrap();
    let posterior_mean = PosteriorMean(GmmDenoiser::new(dev, &mixture));
    let loss = with_ctx(
        dev,
        sch,
        &posterior_mean,
        &posterior_mean,
        teacher,
        iteration,
        |ctx| tract.loss(ctx, x).unwrap().array(),
    );
    f64::from(loss)
}

/// The exact denoiser as a parameter-free student.
struct PosteriorMean(GmmDenoiser);

impl Denoiser for PosteriorMean {
    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        self.0.denoise(z, level)
    }
}

impl Student for PosteriorMean {
    fn denoise_taped(&self, z: TapedBatch, level: &Level) -> Result<TapedBatch> {
        let (z, tape) = z.split_tape();
        Ok(self.0.denoise(&z, level)?.put_tape(tape))
    }
}
