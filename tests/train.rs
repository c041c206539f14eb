//! Training: exact resume, determinism, the NaN guard, checkpoint errors, network shapes (an mlp
//! in any dimension), a U-ViT that learns and round-trips, sampling from checkpoints, and calibration against the
//! closed-form posterior variance of Gaussian data.

mod common;

use common::Gaussian;
use fewstep::checkpoint;
use fewstep::config::{plugin_from_toml, ConfigBuilder};
use fewstep::data::{write_data, DataArray};
use fewstep::denoiser::PARTS;
use fewstep::denoiser::{BuildCtx, DenoiserSpec, Level, NetCtx};
use fewstep::integrator::xvar_table::XVarTable;
use fewstep::run::sample::{sample, SampleConfig};
use fewstep::run::train::DEFAULTS;
use fewstep::schedule::Schedule;
use fewstep::tensor::{batch_from_vec, seeded_device};
use fewstep::train::{train, train_step, LogLine, TrainConfig};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// Ring-of-8 mixture data (std 0.05), like the built-in `ring8`.
fn ring8(path: &Path, n: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut v = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let a = std::f64::consts::TAU * rng.gen_range(0..8) as f64 / 8.0;
        let (e1, e2): (f64, f64) = (
            rng.sample(rand_distr::StandardNormal),
            rng.sample(rand_distr::StandardNormal),
        );
        v.push((a.cos() + 0.05 * e1) as f32);
        v.push((a.sin() + 0.05 * e2) as f32);
    }
    write_data(path, &DataArray::new(v, vec![n, 2]), &vec![]).unwrap();
}

/// The default training config with `extra` (TOML) on top: small and fast for tests.
fn config(data: &Path, out: &Path, extra: &str) -> TrainConfig {
    let mut b = ConfigBuilder::from_defaults(DEFAULTS)
        .unwrap()
        .set("data", Some(data.display().to_string()))
        .set("out", Some(out.display().to_string()))
        .set("batch", Some(64))
        .set("log_every", Some(5))
        .set("warmup", Some(5));
    let extra: toml::Table = extra.parse().unwrap();
    for (k, v) in extra {
        b = b.set(&k, Some(v));
    }
    b.build().unwrap()
}

fn state(path: &Path) -> fewstep::tensor::StateDict {
    checkpoint::load(path, &PARTS).unwrap().state
}

struct Run {
    _dir: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
}

fn ring8_run() -> Run {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    ring8(&data, 2000);
    let out = dir.path().join("run");
    Run {
        _dir: dir,
        data,
        out,
    }
}

#[test]
fn resume_continues_exactly() {
    let r = ring8_run();
    let straight = r.out.with_file_name("straight");
    // A learning-rate decay follows the run's total steps, so a run extended by --resume decays
    // differently from one planned that long; a constant rate makes the first 15 steps those of
    // the 30-step run.
    let run = |steps| format!("steps = {steps}\ncheckpoint_every = 10\nlr_decay = \"constant\"");
    let cfg = config(&r.data, &straight, &run(30));
    train(&cfg, false, false).unwrap();

    let first = config(&r.data, &r.out, &run(15));
    assert_eq!(train(&first, false, false).unwrap().step, 15);
    let rest = config(&r.data, &r.out, &run(30));
    let done = train(&rest, true, false).unwrap();
    assert_eq!(done.step, 30);
    // Bit-exact on CPU: weights, EMA and AdamW moments all match the uninterrupted run.
    let (a, b) = (
        state(&checkpoint::latest(&straight).unwrap()),
        state(&done.checkpoint),
    );
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        assert!(t == &b[k], "{k} differs after resume");
    }
    // The log continues where the checkpoint was: one line per 5 steps, no repeats.
    let log = std::fs::read_to_string(r.out.join("log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<LogLine>(l).unwrap().step)
        .collect();
    assert_eq!(steps, (1..=6).map(|i| 5 * i).collect::<Vec<_>>());
}

#[test]
fn same_seed_same_weights() {
    let r = ring8_run();
    let a = train(
        &config(&r.data, &r.out.join("a"), "steps = 8"),
        false,
        false,
    )
    .unwrap();
    let b = train(
        &config(&r.data, &r.out.join("b"), "steps = 8"),
        false,
        false,
    )
    .unwrap();
    let c = train(
        &config(&r.data, &r.out.join("c"), "steps = 8\nseed = 1"),
        false,
        false,
    )
    .unwrap();
    let (a, b, c) = (
        state(&a.checkpoint),
        state(&b.checkpoint),
        state(&c.checkpoint),
    );
    assert!(a == b, "same seed must give the same weights");
    assert!(a["ema.input.weight"] != c["ema.input.weight"]);
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let r = ring8_run();
    // An absurd learning rate blows the weights up within a couple of steps.
    let cfg = config(
        &r.data,
        &r.out,
        "steps = 50\ncheckpoint_every = 1\nlr = 1e30\nwarmup = 0\ngrad_clip = 0.0",
    );
    let err = format!("{:#}", train(&cfg, false, false).unwrap_err());
    assert!(
        err.contains("the loss is") || err.contains("gradient norm is"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint"), "{err}");
    let (step, path) = checkpoint::list(&r.out).unwrap().pop().unwrap();
    assert!(
        step < 50 && err.contains(&path.display().to_string()),
        "{err}"
    );
    for (k, t) in state(&path) {
        assert!(t.values.iter().all(|v| v.is_finite()), "{k} is not finite");
    }
}

#[test]
fn mismatched_checkpoint_names_both_shapes() {
    let r = ring8_run();
    train(&config(&r.data, &r.out, "steps = 2"), false, false).unwrap();
    let wider = config(
        &r.data,
        &r.out,
        "steps = 4\n[denoiser]\nname = \"mlp\"\nwidth = 1024",
    );
    let err = format!("{:#}", train(&wider, true, false).unwrap_err());
    assert!(
        err.contains("[512, 2]") && err.contains("[1024, 2]"),
        "{err}"
    );
    assert!(
        err.contains("width 512") && err.contains("width 1024"),
        "{err}"
    );

    // The same check guards sampling: a uvit spec cannot load an mlp checkpoint.
    let uvit: Box<dyn DenoiserSpec> = plugin_from_toml("name = \"uvit\"").unwrap();
    let err = uvit
        .build(&BuildCtx {
            dev: seeded_device(0),
            data: None,
            checkpoint: Some(r.out.clone()),
        })
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("shape [2]"), "{err:#}");
}

#[test]
fn missing_checkpoints_are_clear_errors() {
    let r = ring8_run();
    let err = train(&config(&r.data, &r.out, "steps = 2"), true, false).unwrap_err();
    assert!(format!("{err:#}").contains("no checkpoint"), "{err:#}");
    let err = checkpoint::resolve(&r.out.join("nope.safetensors")).unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    let mlp: Box<dyn DenoiserSpec> = plugin_from_toml("name = \"mlp\"").unwrap();
    let ctx = BuildCtx {
        dev: seeded_device(0),
        data: None,
        checkpoint: None,
    };
    let err = mlp.build(&ctx).err().unwrap();
    assert!(format!("{err:#}").contains("--checkpoint"), "{err:#}");
    // A finished run refuses to be overwritten, and refuses a resume without more steps.
    train(&config(&r.data, &r.out, "steps = 2"), false, false).unwrap();
    let err = train(&config(&r.data, &r.out, "steps = 2"), false, false).unwrap_err();
    assert!(format!("{err:#}").contains("--resume"), "{err:#}");
    let err = train(&config(&r.data, &r.out, "steps = 2"), true, false).unwrap_err();
    assert!(format!("{err:#}").contains("--steps"), "{err:#}");
}

#[test]
fn network_shapes_come_from_the_config_and_the_data() {
    let net = |spec: &str, shape: Vec<usize>| {
        let spec: Box<dyn DenoiserSpec> = plugin_from_toml(spec)?;
        let ctx = NetCtx {
            dev: seeded_device(0),
            row_shape: shape,
            init: true,
        };
        spec.network(&ctx).map(|n| n.describe())
    };
    // Any data dimension, width and depth: 17 -> 300 (cond 32 -> 300), 2 hidden, 300 -> 17.
    let about = net("name = \"mlp\"\nwidth = 300\ndepth = 3", vec![17]).unwrap();
    let params = 32 * 300 + 300 + 17 * 300 + 300 + 2 * (300 * 300 + 300) + 300 * 17 + 17;
    assert_eq!(
        about,
        format!("mlp dim 17 width 300 depth 3 ({params} parameters)")
    );
    assert!(net("name = \"mlp\"\nwidth = 512", vec![64])
        .unwrap()
        .starts_with("mlp dim 64 width 512 ("));
    for bad in ["width = 0", "depth = 0"] {
        let err = format!(
            "{:#}",
            net(&format!("name = \"mlp\"\n{bad}"), vec![2]).unwrap_err()
        );
        assert!(err.contains(">= 1"), "{bad}: {err}");
    }
    // Any image shape the patch divides: 3x20x20 in 2x2 patches (the small preset's side / 8).
    assert!(net("name = \"uvit\"", vec![3, 20, 20])
        .unwrap()
        .starts_with("uvit 3x20x20 patch 2 width 256 heads 4 blocks 5 ("));
    let err = format!(
        "{:#}",
        net("name = \"uvit\"\npatch = 3\nheads = 5", vec![3, 20, 20]).unwrap_err()
    );
    assert!(
        err.contains("patch 3 must divide") && err.contains("multiple of heads 5"),
        "{err}"
    );
    let err = format!("{:#}", net("name = \"uvit\"", vec![12]).unwrap_err());
    assert!(err.contains("C x H x W") && err.contains("[12]"), "{err}");
    let err = format!("{:#}", net("name = \"gmm\"", vec![2]).unwrap_err());
    assert!(err.contains("cannot be trained"), "{err}");
}

#[test]
fn mlp_trains_and_samples_in_any_dimension() {
    let dir = tempfile::tempdir().unwrap();
    for dim in [1, 3, 17, 100] {
        let data = dir.path().join(format!("d{dim}.h5"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(dim as u64);
        let rows: Vec<f32> = (0..256 * dim)
            .map(|i| {
                (i % dim) as f32 / dim as f32
                    + 0.1 * rng.sample::<f32, _>(rand_distr::StandardNormal)
            })
            .collect();
        write_data(&data, &DataArray::new(rows, vec![256, dim]), &vec![]).unwrap();
        let out = dir.path().join(format!("run{dim}"));
        let cfg = config(
            &data,
            &out,
            "steps = 30\n[denoiser]\nname = \"mlp\"\nwidth = 48\ndepth = 2",
        );
        let done = train(&cfg, false, false).unwrap();
        assert!(done.loss.is_finite(), "dim {dim}");
        let overrides = fewstep::config::Overrides::default()
            .path("checkpoint", Some(&out))
            .set("n", Some(40))
            .set("steps", Some(4))
            .path("out", Some(&dir.path().join(format!("s{dim}.h5"))));
        let drawn = sample(&SampleConfig::resolve(None, &overrides).unwrap()).unwrap();
        assert_eq!(drawn.samples.shape, vec![40, dim]);
        assert!(
            drawn.samples.values.iter().all(|v| v.is_finite()),
            "dim {dim}"
        );
    }
}

#[test]
fn uvit_trains_and_samples_on_any_image_shape() {
    let dir = tempfile::tempdir().unwrap();
    for shape in [[1usize, 8, 8], [3, 12, 12]] {
        let d: usize = shape.iter().product();
        let data = dir.path().join(format!("i{d}.h5"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(d as u64);
        let rows: Vec<f32> = (0..64 * d)
            .map(|i| {
                ((i % d) as f32 / d as f32 - 0.5)
                    + 0.1 * rng.sample::<f32, _>(rand_distr::StandardNormal)
            })
            .collect();
        let dims = [vec![64], shape.to_vec()].concat();
        write_data(&data, &DataArray::new(rows, dims), &vec![]).unwrap();
        let out = dir.path().join(format!("u{d}"));
        let cfg = config(
            &data,
            &out,
            "steps = 6\nbatch = 8\n[denoiser]\nname = \"uvit\"\nsize = \"tiny\"\npatch = 2\nwidth = 16",
        );
        let done = train(&cfg, false, false).unwrap();
        assert!(done.loss.is_finite(), "{shape:?}");
        let overrides = fewstep::config::Overrides::default()
            .path("checkpoint", Some(&out))
            .set("n", Some(5))
            .set("steps", Some(2))
            .path("out", Some(&dir.path().join(format!("s{d}.h5"))));
        let drawn = sample(&SampleConfig::resolve(None, &overrides).unwrap()).unwrap();
        assert_eq!(drawn.samples.shape, [vec![5], shape.to_vec()].concat());
        assert!(
            drawn.samples.values.iter().all(|v| v.is_finite()),
            "{shape:?}"
        );
    }
}

#[test]
fn uvit_learns_and_its_checkpoint_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes16.h5");
    let set = fewstep::data::builtin::make_set("shapes16", 512, 0).unwrap();
    fewstep::data::builtin::write_set(&data, &set, "test").unwrap();
    let out = dir.path().join("run");
    let cfg = config(
        &data,
        &out,
        "steps = 300\nbatch = 16\nlog_every = 10\ncheckpoint_every = 100\nlr = 1e-3\n\
         [denoiser]\nname = \"uvit\"\nsize = \"tiny\"",
    );
    let done = train(&cfg, false, false).unwrap();
    let log: Vec<LogLine> = std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mean = |ls: &[LogLine]| ls.iter().map(|l| l.loss).sum::<f64>() / ls.len() as f64;
    let (early, late) = (mean(&log[..3]), mean(&log[log.len() - 3..]));
    assert!(late < 0.75 * early, "loss {early} -> {late}");
    // The share of time spent waiting for data is logged (a small in-memory set keeps up).
    let wait = log.iter().map(|l| l.data_wait).sum::<f64>() / log.len() as f64;
    assert!((0.0..1.0).contains(&wait), "data_wait {wait}");

    // Round trip: the sampled network built from the checkpoint reproduces the saved EMA
    // bit for bit, and saving it again gives the same tensors.
    let spec = &cfg.denoiser;
    let dev = seeded_device(0);
    let ck = checkpoint::load(&done.checkpoint, &PARTS).unwrap();
    let mut net = spec
        .network(&NetCtx {
            dev: dev.clone(),
            row_shape: vec![3, 16, 16],
            init: false,
        })
        .unwrap();
    net.load_state(&ck.state, &PARTS).unwrap();
    assert!(net.state(&PARTS) == ck.state);
    let sampled = spec
        .build(&BuildCtx {
            dev: dev.clone(),
            data: None,
            checkpoint: Some(out.clone()),
        })
        .unwrap();
    let z = fewstep::tensor::normal(&dev, 4, 768);
    let schedule: Box<dyn Schedule> = plugin_from_toml("name = \"cosine\"").unwrap();
    let ema = net.into_ema();
    for t in [0.0, 0.3, 1.0] {
        let level = Level::at(schedule.as_ref(), t);
        let a = sampled.denoise(&z, &level).unwrap().as_vec();
        let b = ema.denoise(&z, &level).unwrap().as_vec();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn gradient_steps_lower_the_loss_and_clip() {
    // Repeated steps on one fixed batch: the loss of that batch must fall, and with a tiny
    // clip norm the reported (pre-clip) gradient norm still exceeds it.
    let dev = seeded_device(0);
    let r = ring8_run();
    let cfg = config(&r.data, &r.out, "grad_clip = 1e-3\nlr = 1e-2\nwarmup = 1");
    let mut net = cfg
        .denoiser
        .network(&NetCtx {
            dev: dev.clone(),
            row_shape: vec![2],
            init: true,
        })
        .unwrap();
    let data = fewstep::data::read_data(&r.data).unwrap();
    let x = batch_from_vec(&dev, data.values[..128].to_vec(), 64, 2);
    // The same step index repeats the same times and noise: only the weights change.
    let first = train_step(&cfg, &dev, net.as_mut(), None, &x, 0).unwrap();
    assert!(first.grad_norm > 1e-3);
    let mut last = first;
    for _ in 0..30 {
        last = train_step(&cfg, &dev, net.as_mut(), None, &x, 0).unwrap();
    }
    assert!(last.loss < first.loss, "{} -> {}", first.loss, last.loss);
}

#[test]
fn calibration_matches_the_gaussian_posterior_variance() {
    // For x ~ N(m, s^2 I) and the exact denoiser, E||x - E[x|z_t]||^2 / d = Var[x|z_t] per
    // coordinate, in closed form; the table is eta times it.
    let dev = seeded_device(0);
    let g = Gaussian {
        dev: dev.clone(),
        mean: vec![0.5; 8],
        std: 0.7,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let x: Vec<f32> = (0..8 * 4000)
        .map(|_| 0.5 + 0.7 * rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    let schedule: Box<dyn Schedule> = plugin_from_toml("name = \"cosine\"").unwrap();
    let grid = [0.0, 0.1, 0.5, 0.9, 1.0];
    let table =
        XVarTable::measure(&dev, &g, schedule.as_ref(), &x, 8, &grid, 0.75, 0, 1000).unwrap();
    for (&t, &v) in table.times().iter().zip(table.values()) {
        let (a, s) = schedule.alpha_sigma(t);
        let exact = 0.75 * g.gain_var(a, s).1;
        // 32000 squared errors: relative standard error ~ sqrt(2 / 32000) < 1%.
        assert!(
            (v - exact).abs() <= 0.03 * exact + 1e-7,
            "t {t}: {v} vs {exact}"
        );
    }
    assert!(table.values()[0] < 1e-12);
}

#[test]
fn sampling_a_run_folder_uses_its_network_and_shape() {
    let r = ring8_run();
    train(&config(&r.data, &r.out, "steps = 5"), false, false).unwrap();
    let samples = r.out.join("samples.h5");
    let overrides = fewstep::config::Overrides::default()
        .path("checkpoint", Some(&r.out))
        .set("steps", Some(4))
        .set("n", Some(100))
        .path("out", Some(&samples));
    let cfg = SampleConfig::resolve(None, &overrides).unwrap();
    let done = sample(&cfg).unwrap();
    let (drawn, nfe) = (done.samples, done.nfe);
    assert_eq!((drawn.shape.clone(), nfe), (vec![100, 2], 4));
    assert!(drawn.values.iter().all(|v| v.is_finite()));
    let again = fewstep::data::read_data(&samples).unwrap();
    assert_eq!(again, drawn);
}

#[test]
fn init_copies_a_checkpoint_and_a_teacher_loads() {
    let r = ring8_run();
    let a = train(
        &config(&r.data, &r.out.join("a"), "steps = 5"),
        false,
        false,
    )
    .unwrap();
    let extra = format!(
        "steps = 1\nlr = 1e-20\ninit = {:?}\nteacher = {:?}",
        a.checkpoint.display().to_string(),
        r.out.join("a").display().to_string()
    );
    let b = train(&config(&r.data, &r.out.join("b"), &extra), false, false).unwrap();
    let (a, b) = (state(&a.checkpoint), state(&b.checkpoint));
    // One step at lr 1e-20 leaves the copied weights where they were (to f32 rounding).
    for (k, t) in a.iter().filter(|(k, _)| k.starts_with("ema.")) {
        for part in ["net", "ema"] {
            let other = &b[&k.replacen("ema", part, 1)];
            let diff = t
                .values
                .iter()
                .zip(&other.values)
                .map(|(x, y)| (x - y).abs());
            assert!(diff.fold(0f32, f32::max) < 1e-6, "{part} of {k}");
        }
    }
    let missing = format!("steps = 1\nteacher = {:?}", "no/such/run");
    let err = train(&config(&r.data, &r.out.join("c"), &missing), false, false).unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot load the teacher"),
        "{err:#}"
    );
}

#[test]
fn restarting_rounds_run_their_own_learning_rate_schedule() {
    let r = ring8_run();
    let pd = |restart: bool| {
        config(
            &r.data,
            &r.out,
            &format!(
                "steps = 10\nwarmup = 2\nlr = 1e-3\nlr_decay = \"cosine\"\nlr_final = 0.1\n\
                 [objective]\nname = \"progressive\"\nstudent_steps = 2\nrounds = 2\n\
                 iters_per_round = 4\nrestart_rounds = {restart}"
            ),
        )
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
    // Round 0 is steps 0..4, round 1 (the last) 4..10: each warms up and decays to lr_final.
    let restarting = pd(true);
    let lr: Vec<f64> = (0..10).map(|s| restarting.lr_at(s)).collect();
    for (first, last) in [(0, 3), (4, 9)] {
        assert!(close(lr[first], 5e-4), "{lr:?}");
        assert!(close(lr[first + 1], 1e-3), "{lr:?}");
        assert!(close(lr[last], 1e-4), "{lr:?}");
    }
    // Rounds that carry on: one schedule over the run.
    let carrying = pd(false);
    let lr: Vec<f64> = (0..10).map(|s| carrying.lr_at(s)).collect();
    assert!(
        close(lr[9], 1e-4) && lr[4] > lr[5] && lr[3] > lr[4],
        "{lr:?}"
    );
}

#[test]
fn later_rounds_are_taught_by_the_frozen_student_and_resume_exactly() {
    let r = ring8_run();
    let teacher = r.out.with_file_name("teacher");
    train(&config(&r.data, &teacher, "steps = 4"), false, false).unwrap();
    // Progressive distillation: round 0 (4-step student of the run's teacher) for 3
    // iterations, then round 1 (2-step student of the round-0 student).
    let pd = |out: &Path, steps: u64| {
        config(
            &r.data,
            out,
            &format!(
                "steps = {steps}\ncheckpoint_every = 2\nkeep_checkpoints = 1\nteacher = \"{}\"\n\
                 [objective]\nname = \"progressive\"\nstudent_steps = 2\nrounds = 2\n\
                 iters_per_round = 3",
                teacher.display()
            ),
        )
    };
    let straight = r.out.with_file_name("straight");
    let done = train(&pd(&straight, 7), false, false).unwrap();
    // Round 1's teacher is the student as round 1 began (after 3 iterations), kept apart from
    // the pruned checkpoints; checkpoints record the S of the round last trained.
    let frozen =
        checkpoint::load(&straight.join("rounds/ckpt-000000003.safetensors"), &PARTS).unwrap();
    assert_eq!(frozen.meta.step, 3);
    assert_eq!(frozen.meta.student_steps, Some(4));
    assert_eq!(
        checkpoint::load(&done.checkpoint, &[])
            .unwrap()
            .meta
            .student_steps,
        Some(2)
    );
    let at3 = pd(&r.out.with_file_name("three"), 3);
    let three = train(&at3, false, false).unwrap();
    let (a, b) = (state(&three.checkpoint), frozen.state);
    for (k, t) in &a {
        assert!(
            t == &b[k],
            "{k}: the frozen teacher is not the student at step 3"
        );
    }
    // Stopping inside round 1 and resuming reloads the same round teacher: bit-exact.
    train(&pd(&r.out, 5), false, false).unwrap();
    let resumed = train(&pd(&r.out, 7), true, false).unwrap();
    let (a, b) = (state(&done.checkpoint), state(&resumed.checkpoint));
    for (k, t) in &a {
        assert!(t == &b[k], "{k} differs after resuming inside a round");
    }
    // So does stopping exactly where round 1 begins (its restart happens on resume).
    let edge = r.out.with_file_name("edge");
    train(&pd(&edge, 3), false, false).unwrap();
    let resumed = train(&pd(&edge, 7), true, false).unwrap();
    let b = state(&resumed.checkpoint);
    for (k, t) in &a {
        assert!(
            t == &b[k],
            "{k} differs after resuming at the round's start"
        );
    }
    // Round 1 restarted from its teacher (Salimans & Ho): one step later AdamW's moments are
    // one gradient's, m = (1 - beta1) g and v = (1 - beta2) g^2, and each weight moved from
    // the teacher's by one bias-corrected Adam step, lr g/|g| (up to eps).
    let four = train(&pd(&r.out.with_file_name("four"), 4), false, false).unwrap();
    let round1_teacher =
        checkpoint::load(&straight.join("rounds/ckpt-000000003.safetensors"), &PARTS)
            .unwrap()
            .state;
    let cfg = pd(&r.out.with_file_name("four"), 4);
    let (s4, lr) = (state(&four.checkpoint), cfg.lr_at(3));
    let (mut checked, mut worst_ratio, mut worst_step) = (0, 0f64, 0f64);
    for (k, m) in s4.iter().filter(|(k, _)| k.starts_with("adam_m.")) {
        let name = &k["adam_m.".len()..];
        let (v, net) = (&s4[&format!("adam_v.{name}")], &s4[&format!("net.{name}")]);
        let teacher = &round1_teacher[&format!("ema.{name}")];
        for i in 0..m.values.len() {
            let (m, v) = (f64::from(m.values[i]), f64::from(v.values[i]));
            if (v / (1.0 - cfg.beta2)).sqrt() < 1e-5 {
                continue; // |g| so small that eps (1e-8) matters
            }
            let ratio = m * m / v / ((1.0 - cfg.beta1).powi(2) / (1.0 - cfg.beta2));
            worst_ratio = worst_ratio.max((ratio - 1.0).abs());
            let moved = f64::from(net.values[i] - teacher.values[i]).abs() / lr;
            worst_step = worst_step.max((moved - 1.0).abs());
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
    assert!(
        worst_ratio < 1e-3,
        "moments carried over: m^2/v off by {worst_ratio}"
    );
    assert!(
        worst_step < 1e-2,
        "not one Adam step from the teacher: off by {worst_step}"
    );
}
