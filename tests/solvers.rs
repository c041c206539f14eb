//! The multistep and ancestral samplers of diffusers and k-diffusion (`dpm-solver++`, `unipc`,
//! `euler-ancestral`) against closed forms with the exact `gmm` denoiser: first-order cases equal
//! DDIM, convergence orders measured as steps double, per-run state, batch-invariant noise.

mod common;

use common::{fewstep, ok, Gaussian};
use fewstep::config::plugin_from_toml;
use fewstep::data::{read_data, Mixture};
use fewstep::denoiser::Denoiser;
use fewstep::integrator::{Integrator, RowNoise, StepCtx, TeacherStep};
use fewstep::plugins::gmm::GmmDenoiser;
use fewstep::registry;
use fewstep::sampling::{sample, trajectory};
use fewstep::schedule::{uniform_grid, Schedule};
use fewstep::tensor::{batch_from_vec, normal, seeded_device, Dev};

fn integrator(toml: &str) -> Box<dyn Integrator> {
    plugin_from_toml(toml).unwrap_or_else(|e| panic!("{toml}: {e}"))
}

fn schedule(name: &str) -> Box<dyn Schedule> {
    plugin_from_toml(&format!("name = \"{name}\"")).unwrap()
}

/// Two unequal 2-D components: curved flows, a posterior mean that turns with t.
fn two_components(dev: &Dev) -> GmmDenoiser {
    let m = Mixture::new(
        vec![0.3, 0.7],
        vec![1.5, 1.0, -1.0, -0.5],
        vec![0.3, 0.6],
        2,
    )
    .unwrap();
    GmmDenoiser::new(dev, &m)
}

const MEAN: [f64; 2] = [1.0, -0.5];
const STD: f64 = 0.5;

/// N(MEAN, STD^2 I) as a one-component mixture, whose probability-flow map is known exactly.
fn gaussian(dev: &Dev) -> GmmDenoiser {
    let m = Mixture::new(vec![1.0], MEAN.to_vec(), vec![STD], 2).unwrap();
    GmmDenoiser::new(dev, &m)
}

/// `steps` uniform steps from t0 to t1, after two start-up steps of h/steps each (h the step):
/// a multistep solver starts at lower order, and a first-order first step of size h would cost
/// O(h^2) globally and hide the order; of size h/steps ~ h^2 it costs O(h^4).
fn order_grid(t0: f64, t1: f64, steps: usize) -> Vec<f64> {
    let h = (t0 - t1) / steps as f64;
    let start = t0 - 2.0 * h / steps as f64;
    let mut grid = vec![t0, t0 - h / steps as f64];
    grid.extend((0..=steps).map(|i| start + (t1 - start) * i as f64 / steps as f64));
    grid
}

/// Samples of `int` over `grid` from the same 512 rows of noise, and the NFE.
fn run(int: &dyn Integrator, sch: &dyn Schedule, den: &dyn Denoiser, grid: &[f64]) -> Vec<f32> {
    let dev = seeded_device(0);
    let z = normal(&dev, 512, 2);
    let noise = RowNoise::default();
    sample(&dev, sch, int, den, z, grid, noise)
        .unwrap()
        .samples
        .as_vec()
}

fn rms(a: &[f32], b: &[f32]) -> f64 {
    let sq: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (sq / a.len() as f64).sqrt()
}

/// log2 of the error ratios as the steps double.
fn orders(errors: &[f64]) -> Vec<f64> {
    errors.windows(2).map(|w| (w[0] / w[1]).log2()).collect()
}

/// Solver configs (lower order at the end switched off, to measure the method itself), the
/// order each converges at and step counts in its asymptotic range above float32's floor. UniPC
/// with its corrector is one order above its predictor. LMS (Adams-Bashforth in sigma/alpha)
/// reaches its rate later; its orders 3 and 4 are checked below.
const ORDERS: [(&str, f64, [usize; 4]); 9] = [
    ("name = \"ddim\"", 1.0, [16, 32, 64, 128]),
    ("name = \"dpm-solver++\"\norder = 2", 2.0, [16, 32, 64, 128]),
    ("name = \"dpm-solver++\"\norder = 3", 3.0, [16, 32, 64, 128]),
    ("name = \"unipc\"\norder = 1", 2.0, [16, 32, 64, 128]),
    ("name = \"unipc\"\norder = 2", 3.0, [16, 32, 64, 128]),
    (
        "name = \"unipc\"\norder = 2\nvariant = \"bh1\"",
        3.0,
        [16, 32, 64, 128],
    ),
    ("name = \"unipc\"\norder = 3", 4.0, [16, 32, 64, 128]),
    (
        "name = \"unipc\"\norder = 2\ncorrector = false",
        2.0,
        [16, 32, 64, 128],
    ),
    ("name = \"lms\"\norder = 2", 2.0, [32, 64, 128, 256]),
];

fn without_final_lowering(cfg: &str) -> Box<dyn Integrator> {
    if cfg.contains("ddim") || cfg.contains("lms") {
        integrator(cfg)
    } else {
        integrator(&format!("{cfg}\nlower_order_final = false"))
    }
}

#[test]
fn orders_on_gaussian_data_against_the_exact_flow() {
    // Karras's schedule over t in [0.9, 0.1], away from the ends where steps in lambda stop
    // shrinking with the step in t.
    let dev = seeded_device(0);
    let (sch, den) = (schedule("karras"), gaussian(&dev));
    let z1 = normal(&dev, 512, 2).as_vec();
    let exact: Vec<f32> = Gaussian {
        dev: dev.clone(),
        mean: MEAN.to_vec(),
        std: STD,
    }
    .flow(sch.as_ref(), &z1, 0.9, 0.1)
    .into_iter()
    .map(|v| v as f32)
    .collect();
    let error = |int: &dyn Integrator, steps| {
        let got = run(int, sch.as_ref(), &den, &order_grid(0.9, 0.1, steps));
        rms(&got, &exact)
    };
    for (cfg, order, steps) in ORDERS {
        let int = without_final_lowering(cfg);
        let e: Vec<f64> = steps.iter().map(|&n| error(int.as_ref(), n)).collect();
        let o = orders(&e);
        println!("{}: errors {e:?}, orders {o:.2?}", cfg.replace('\n', " "));
        // The first doubling may still be on the way to the asymptotic rate.
        assert!(
            (o[0] - order).abs() < 0.5 && o[1..].iter().all(|x| (x - order).abs() < 0.2),
            "{cfg}: errors {e:?}, orders {o:?}, want {order}"
        );
    }
    // LMS of order 3 and 4 extrapolate in sigma/alpha, which spans 80 to 0.002 on this schedule:
    // they reach their rate late and float32's floor (~3e-5 here) early, so only the doubling
    // from 32 to 64 steps is clean.
    for (cfg, order) in [("name = \"lms\"\norder = 3", 3.0), ("name = \"lms\"", 4.0)] {
        let int = integrator(cfg);
        let e: Vec<f64> = [32, 64].iter().map(|&n| error(int.as_ref(), n)).collect();
        let o = orders(&e);
        println!("{}: errors {e:?}, orders {o:.2?}", cfg.replace('\n', " "));
        assert!(o[0] > order - 0.5, "{cfg}: errors {e:?}, order {o:?}");
    }
    // diffusers' 3M (see plugins/dpm_solver_pp.rs) falls back to second order.
    let d3 = without_final_lowering("name = \"dpm-solver++\"\norder = 3\ndiffusers_3m = true");
    let e: Vec<f64> = [16, 32, 64, 128]
        .iter()
        .map(|&n| error(d3.as_ref(), n))
        .collect();
    let o = orders(&e);
    println!("diffusers 3M: errors {e:?}, orders {o:.2?}");
    assert!(
        o[1..].iter().all(|&x| x < 2.2),
        "diffusers' 3M: {e:?} {o:?}"
    );
}

#[test]
fn orders_on_a_mixture_against_a_4096_step_reference() {
    let dev = seeded_device(0);
    let (sch, den) = (schedule("karras"), two_components(&dev));
    let reference = run(
        without_final_lowering("name = \"dpm-solver++\"\norder = 3").as_ref(),
        sch.as_ref(),
        &den,
        &order_grid(0.9, 0.1, 4096),
    );
    // Another solver agrees with it to about float32's rounding over 4096 steps.
    let check = run(
        without_final_lowering("name = \"unipc\"\norder = 3").as_ref(),
        sch.as_ref(),
        &den,
        &order_grid(0.9, 0.1, 4096),
    );
    let floor = rms(&check, &reference);
    assert!(floor < 2e-5, "the two references differ by {floor}");
    // Step counts whose errors stay far above that floor. The mixture's flow is rougher than a
    // Gaussian's, so its errors reach their asymptotic rate later: a wider band.
    for (cfg, order, steps) in [
        ("name = \"ddim\"", 1.0, [32, 64, 128]),
        ("name = \"dpm-solver++\"\norder = 2", 2.0, [16, 32, 64]),
        ("name = \"dpm-solver++\"\norder = 3", 3.0, [16, 32, 64]),
        ("name = \"unipc\"\norder = 1", 2.0, [32, 64, 128]),
        ("name = \"unipc\"\norder = 2", 3.0, [16, 32, 64]),
    ] {
        let int = without_final_lowering(cfg);
        let e: Vec<f64> = steps
            .iter()
            .map(|&n| {
                let got = run(int.as_ref(), sch.as_ref(), &den, &order_grid(0.9, 0.1, n));
                rms(&got, &reference)
            })
            .collect();
        let o = orders(&e);
        println!("{}: errors {e:?}, orders {o:.2?}", cfg.replace('\n', " "));
        assert!(e[2] > 20.0 * floor, "{cfg}: {e:?} near the floor {floor}");
        assert!(
            o.iter().all(|x| (x - order).abs() < 0.45),
            "{cfg}: errors {e:?}, orders {o:?}, want {order}"
        );
    }
}

#[test]
fn first_order_cases_are_ddim() {
    let dev = seeded_device(1);
    let den = two_components(&dev);
    for sname in ["cosine", "karras", "linear"] {
        let sch = schedule(sname);
        for steps in [1, 2, 8] {
            let grid = uniform_grid(steps);
            let ddim = run(
                integrator("name = \"ddim\"").as_ref(),
                sch.as_ref(),
                &den,
                &grid,
            );
            for cfg in [
                "name = \"dpm-solver++\"\norder = 1",
                "name = \"unipc\"\norder = 1\ncorrector = false",
                "name = \"euler-ancestral\"\neta = 0.0",
                "name = \"lms\"\norder = 1",
            ] {
                let got = run(integrator(cfg).as_ref(), sch.as_ref(), &den, &grid);
                let d = rms(&got, &ddim);
                assert!(d < 1e-6, "{sname} {steps} steps {cfg}: {d}");
            }
        }
        // One step from t = 1 to 0 is DDIM for the multistep solvers: no history to use.
        for name in ["dpm-solver++", "unipc", "lms"] {
            let one = run(
                integrator(&format!("name = \"{name}\"")).as_ref(),
                sch.as_ref(),
                &den,
                &[1.0, 0.0],
            );
            let ddim = run(
                integrator("name = \"ddim\"").as_ref(),
                sch.as_ref(),
                &den,
                &[1.0, 0.0],
            );
            assert!(rms(&one, &ddim) < 1e-6, "{sname} {name}");
        }
    }
}

#[test]
fn multistep_solvers_use_their_history_and_one_evaluation_per_step() {
    let dev = seeded_device(2);
    let den = two_components(&dev);
    let sch = schedule("cosine");
    let grid = uniform_grid(8);
    let ddim = run(
        integrator("name = \"ddim\"").as_ref(),
        sch.as_ref(),
        &den,
        &grid,
    );
    for cfg in [
        "name = \"dpm-solver++\"",
        "name = \"dpm-solver++\"\norder = 3",
        "name = \"unipc\"",
        "name = \"unipc\"\nvariant = \"bh1\"",
        "name = \"lms\"",
        "name = \"euler-ancestral\"",
    ] {
        let int = integrator(cfg);
        let z = normal(&dev, 64, 2);
        let s = sample(
            &dev,
            sch.as_ref(),
            int.as_ref(),
            &den,
            z,
            &grid,
            RowNoise::default(),
        )
        .unwrap();
        assert_eq!(s.nfe, 8, "{cfg}");
        // Stepping alone (`step`, a run of one step) is DDIM here; in a run it is not.
        let got = run(int.as_ref(), sch.as_ref(), &den, &grid);
        assert!(rms(&got, &ddim) > 1e-3, "{cfg} is DDIM in a run");
        let mut ctx = StepCtx::new(&dev, sch.as_ref(), &den);
        let z = normal(&dev, 4, 2);
        if !cfg.contains("ancestral") {
            let alone = int.step(&mut ctx, z.clone(), 0.5, 0.375).unwrap();
            let ddim_step = integrator("name = \"ddim\"")
                .step(&mut ctx, z.clone(), 0.5, 0.375)
                .unwrap();
            assert!(rms(&alone.as_vec(), &ddim_step.as_vec()) < 1e-6, "{cfg}");
            // Given no run state where one is needed, the error says how to step it.
            let e = int.step_in_run(&mut ctx, None, z, 0.5, 0.375).unwrap_err();
            assert!(e.to_string().contains("new_state"), "{e}");
        }
        // None of them can teach distillation.
        let x = normal(&dev, 2, 2);
        let teach = int.teacher_step(TeacherStep {
            dev: &dev,
            schedule: sch.as_ref(),
            x_hat: &x,
            z_t: &x,
            t: &[0.5, 0.5],
            s: &[0.25, 0.25],
            x_var: None,
        });
        assert!(teach.is_err(), "{cfg} must refuse to teach");
    }
}

#[test]
fn a_run_starts_afresh_and_trajectories_follow_it() {
    let dev = seeded_device(3);
    let den = two_components(&dev);
    let sch = schedule("cosine");
    let grid = uniform_grid(6);
    for cfg in [
        "name = \"dpm-solver++\"\norder = 3",
        "name = \"unipc\"",
        "name = \"lms\"",
        "name = \"euler-ancestral\"",
    ] {
        let int = integrator(cfg);
        // Two runs with the same integrator: the second does not inherit the first's history.
        let a = run(int.as_ref(), sch.as_ref(), &den, &grid);
        assert_eq!(a, run(int.as_ref(), sch.as_ref(), &den, &grid), "{cfg}");
        // Inner points of a trajectory are tried, not taken: its step ends are the run's.
        let z = normal(&seeded_device(0), 512, 2);
        let mut ctx = StepCtx::new(&dev, sch.as_ref(), &den);
        let path = trajectory(&mut ctx, int.as_ref(), z, &grid, 4).unwrap();
        assert_eq!(ctx.nfe(), 6 * 4, "{cfg}");
        let (t_end, z_end) = path.last().unwrap();
        assert_eq!(*t_end, 0.0);
        assert_eq!(z_end.as_vec(), a, "{cfg}");
        // An inner point differs from the step's end.
        assert!(rms(&path[1].1.as_vec(), &path[3].1.as_vec()) > 1e-3);
    }
}

/// Euler-ancestral samples of `rows` rows of shared noise, split into batches of `batch`.
fn ancestral(seed: u64, rows: usize, batch: usize, eta: f64) -> Vec<f32> {
    let dev = seeded_device(0);
    let den = two_components(&dev);
    let sch = schedule("cosine");
    let int = integrator(&format!("name = \"euler-ancestral\"\neta = {eta}"));
    let z1 = normal(&dev, rows, 2).as_vec();
    let mut out = Vec::new();
    for (i, chunk) in z1.chunks(batch * 2).enumerate() {
        let z = batch_from_vec(&dev, chunk.to_vec(), chunk.len() / 2, 2);
        let noise = RowNoise {
            seed,
            first_row: (i * batch) as u64,
        };
        let s = sample(
            &dev,
            sch.as_ref(),
            int.as_ref(),
            &den,
            z,
            &uniform_grid(8),
            noise,
        );
        out.extend(s.unwrap().samples.as_vec());
    }
    out
}

#[test]
fn euler_ancestral_noise_follows_the_seed_not_the_batch() {
    let whole = ancestral(7, 12, 12, 1.0);
    assert_eq!(whole, ancestral(7, 12, 5, 1.0), "batches of 5");
    assert_eq!(whole, ancestral(7, 12, 1, 1.0), "batches of 1");
    assert_ne!(whole, ancestral(8, 12, 12, 1.0), "another seed");
    // The noise matters: half the noise is another sample.
    assert_ne!(whole, ancestral(7, 12, 12, 0.5));
}

#[test]
fn euler_ancestral_step_has_ancestral_moments() {
    // From one z_t repeated, a step t -> s: mean alpha_s x_hat + sigma_s sqrt(1 - m) eps_hat and
    // variance sigma_s^2 m per coordinate, m = min(1, eta^2 (1 - SNR_t/SNR_s)). At eta = 1 this is
    // DDPM's posterior q(z_s | z_t, x = x_hat) (eq. 1).
    let dev = seeded_device(4);
    let den = two_components(&dev);
    let sch = schedule("cosine");
    let (t, s, n) = (0.6, 0.4, 20000);
    let z = batch_from_vec(&dev, [0.3f32, -0.2].repeat(n), n, 2);
    let x_hat = den
        .denoise(
            &batch_from_vec(&dev, vec![0.3, -0.2], 1, 2),
            &fewstep::denoiser::Level::at(sch.as_ref(), t),
        )
        .unwrap()
        .as_vec();
    let ((at, st), (as_, ss)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
    let r = (sch.logsnr(t) - sch.logsnr(s)).exp();
    for eta in [1.0, 0.5, 3.0] {
        let m = (eta * eta * (1.0 - r)).min(1.0);
        let int = integrator(&format!("name = \"euler-ancestral\"\neta = {eta}"));
        let mut ctx = StepCtx::new(&dev, sch.as_ref(), &den).with_noise(RowNoise {
            seed: 5,
            first_row: 0,
        });
        let out = int.step(&mut ctx, z.clone(), t, s).unwrap().as_vec();
        for j in 0..2 {
            let zj = [0.3, -0.2][j];
            let xh = f64::from(x_hat[j]);
            let want_mean = as_ * xh + ss * (1.0 - m).sqrt() * (zj - at * xh) / st;
            if eta == 1.0 {
                // DDPM's mean: alpha_{t|s} (sigma_s/sigma_t)^2 z_t + alpha_s (1 - r) x_hat.
                let ddpm = at / as_ * (ss / st).powi(2) * zj + as_ * (1.0 - r) * xh;
                assert!((want_mean - ddpm).abs() < 1e-12);
            }
            let vals: Vec<f64> = out.iter().skip(j).step_by(2).map(|&v| v.into()).collect();
            let mean = vals.iter().sum::<f64>() / n as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let want_var = ss * ss * m;
            assert!(
                (mean - want_mean).abs() < 4.0 * (want_var / n as f64).sqrt(),
                "eta {eta}: mean {mean} vs {want_mean}"
            );
            assert!(
                (var / want_var - 1.0).abs() < 4.0 * (2.0 / n as f64).sqrt(),
                "eta {eta}: var {var} vs {want_var}"
            );
        }
    }
}

#[test]
fn settings_show_in_the_registry_and_bad_ones_are_refused() {
    for (name, want) in [
        (
            "dpm-solver++",
            &["diffusers_3m", "lower_order_final", "order"][..],
        ),
        (
            "unipc",
            &["corrector", "lower_order_final", "order", "variant"][..],
        ),
        ("euler-ancestral", &["eta"][..]),
        ("lms", &["order"][..]),
    ] {
        let fields = registry::fields(registry::find("integrator", name).unwrap());
        let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, want, "{name}");
    }
    let list = ok(&["list", "integrator"]);
    for name in [
        "dpm-solver++",
        "unipc",
        "euler-ancestral",
        "lms",
        "bh1 | bh2",
    ] {
        assert!(list.contains(name), "`fewstep list` lacks {name}:\n{list}");
    }
    let err = |toml: &str| {
        plugin_from_toml::<Box<dyn Integrator>>(toml)
            .unwrap_err()
            .to_string()
    };
    assert!(err("name = \"dpm-solver++\"\norder = 4").contains("1, 2 or 3"));
    assert!(err("name = \"unipc\"\norder = 0").contains("1, 2 or 3"));
    assert!(err("name = \"lms\"\norder = 5").contains("1 to 4"));
    let e = err("name = \"unipc\"\nvariant = \"bh3\"");
    assert!(e.contains("bh1") && e.contains("bh2"), "{e}");
    assert!(err("name = \"euler-ancestral\"\neta = -1.0").contains(">= 0"));
    assert!(err("name = \"unipc\"\nsolver_order = 2").contains("solver_order"));
}

#[test]
fn cli_samples_at_any_batch_size_alike() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    ok(&["data", "make", "ring8", "--n", "64", "--out", &p(&data)]);
    let draw = |integrator: &str, batch: &str| {
        let out = dir.path().join(format!("{integrator}-{batch}.h5"));
        let args = [
            "sample",
            "--data",
            &p(&data),
            "--integrator",
            integrator,
            "--steps",
            "4",
            "--n",
            "40",
            "--batch",
            batch,
            "--seed",
            "3",
            "--out",
            &p(&out),
        ];
        let o = fewstep(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_data(&out).unwrap().values
    };
    for name in ["euler-ancestral", "dpm-solver++", "unipc", "lms"] {
        assert_eq!(draw(name, "40"), draw(name, "7"), "{name}");
    }
}

#[test]
fn reproduce_samplers_compares_at_matched_nfe() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("small.toml");
    std::fs::write(
        &cfg,
        r#"datasets = ["ring8"]
reference_n = 400
n = 400
nfe = [1, 4, 8]
[[integrators]]
name = "heun"
[[integrators]]
name = "dpm-solver++"
[[integrators]]
name = "euler-ancestral"
[[integrators]]
name = "dpm-solver++"
order = 3
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let args = [
        "reproduce",
        "samplers",
        "--config",
        &p(&cfg),
        "--out",
        &p(&out),
    ];
    ok(&args);
    let md = std::fs::read_to_string(out.join("samplers.md")).unwrap();
    assert!(
        md.contains("## FD on ring8 (lower is better; columns are NFE)"),
        "{md}"
    );
    assert!(md.contains("| integrator | 1 | 4 | 8 |"), "{md}");
    // Heun on a cosine schedule: 2 NFE per step but 1 on the first (alpha = 0) and the last, so
    // 5 steps fit 8 NFE; the one-evaluation samplers take as many steps as evaluations.
    assert!(md.contains("| `heun` | 1 (1) | 3 (4) | 5 (8) |"), "{md}");
    assert!(
        md.contains("| `dpm-solver++` | 1 (1) | 4 (4) | 8 (8) |"),
        "{md}"
    );
    assert!(
        md.contains("| `euler-ancestral` | 1 (1) | 4 (4) | 8 (8) |"),
        "{md}"
    );
    // Settings other than the defaults name the row.
    assert!(
        md.contains("| `dpm-solver++(order=3)` | 1 (1) | 4 (4) | 8 (8) |"),
        "{md}"
    );
    assert!(md.contains("| exact samples |"), "{md}");
    for f in ["samplers.csv", "samplers-fd.png", "samplers-sw2.png"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(out.join("samplers.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 3, "{csv}");

    std::fs::write(&cfg, "datasets = [\"ring8\"]\nnfe = [0, 2]\n").unwrap();
    let o = fewstep(&args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("small.toml: nfe: budgets must be whole numbers >= 1"),
        "{e}"
    );
}
