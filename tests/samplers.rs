//! Schedules and integrators against closed forms: DDIM algebra, aDDIM (Algorithm 3), the
//! probability-flow ODE of Gaussian data, ancestral sampling moments, configs.

mod common;

use common::{integrator, max_diff, row, schedule, Gaussian};
use dfdx::prelude::ZerosTensor;
use fewstep::config::plugin_from_toml;
use fewstep::denoiser::{Denoiser, Level};
use fewstep::integrator::xvar_table::XVarTable;
use fewstep::integrator::{
    ddim_coeffs, ddim_step, ddim_step_rows, inv_ddim, inv_ddim_rows, Integrator, RowNoise, StepCtx,
    TeacherStep,
};
use fewstep::registry;
use fewstep::sampling::sample;
use fewstep::schedule::{uniform_grid, Schedule};
use fewstep::tensor::{normal, seeded_device, Batch, Dev};

fn gaussian(dev: &Dev) -> Gaussian {
    Gaussian {
        dev: dev.clone(),
        mean: vec![1.0, -0.5, 0.25],
        std: 0.5,
    }
}

/// One integrator step from t to s, and the number of evaluations it took.
fn one_step(
    dev: &Dev,
    sch: &dyn Schedule,
    int: &dyn Integrator,
    den: &Gaussian,
    z: Batch,
    t: f64,
    s: f64,
) -> (Batch, usize) {
    let mut ctx = StepCtx::new(dev, sch, den);
    let out = int.step(&mut ctx, z, t, s).unwrap();
    (out, ctx.nfe())
}

#[test]
fn inv_ddim_inverts_ddim() {
    let dev = seeded_device(1);
    for name in ["cosine", "karras", "linear"] {
        let sch = schedule(&format!("name = \"{name}\""));
        let sch = sch.as_ref();
        let pairs = [(1.0, 0.5), (0.7, 0.3), (0.5, 0.0), (0.3, 0.25), (0.05, 0.0)];
        let (x, z_t) = (normal(&dev, 16, 5), normal(&dev, 16, 5));
        for (t, s) in pairs {
            let z_s = ddim_step(sch, x.clone(), z_t.clone(), t, s);
            let back = inv_ddim(sch, z_s, z_t.clone(), t, s);
            assert!(max_diff(&back, &x) < 1e-4, "{name} ({t}, {s})");
        }
        // Per row: row i uses pairs[i % 5]; each row must equal the scalar step on that row.
        let (t, s): (Vec<f64>, Vec<f64>) = (0..16).map(|i| pairs[i % pairs.len()]).unzip();
        let z_s = ddim_step_rows(&dev, sch, x.clone(), z_t.clone(), &t, &s);
        for i in 0..16 {
            let want = ddim_step(sch, row(&dev, &x, i), row(&dev, &z_t, i), t[i], s[i]);
            assert_eq!(max_diff(&row(&dev, &z_s, i), &want), 0.0, "{name} row {i}");
        }
        let back = inv_ddim_rows(&dev, sch, z_s, z_t.clone(), &t, &s);
        assert!(max_diff(&back, &x) < 1e-4, "{name} rows");
        // s = t is the identity, also at t = s = 0 where sigma_s/sigma_t is 0/0.
        for t in [0.0, 0.4, 1.0] {
            let same = ddim_step(sch, x.clone(), z_t.clone(), t, t);
            assert_eq!(max_diff(&same, &z_t), 0.0, "{name} DDIM_{{{t}->{t}}}");
        }
    }
}

#[test]
fn last_ddim_step_returns_x_hat() {
    let dev = seeded_device(2);
    let den = gaussian(&dev);
    let sch = schedule("name = \"cosine\"");
    let z = normal(&dev, 8, 3);
    let x_hat = den.denoise(&z, &Level::at(sch.as_ref(), 0.125));
    for name in ["ddim", "ddpm", "heun"] {
        let (z0, nfe) = one_step(
            &dev,
            sch.as_ref(),
            integrator(&format!("name = \"{name}\"")).as_ref(),
            &den,
            z.clone(),
            0.125,
            0.0,
        );
        assert_eq!(max_diff(&z0, x_hat.as_ref().unwrap()), 0.0, "{name}");
        assert_eq!(nfe, 1, "{name}");
    }
}

/// Algorithm 3 on the host in f64 for one row: z_s = alpha_s x_hat + sqrt(sigma_s^2 + d c^2
/// x_var / ||eps||^2) eps.
fn addim_reference(
    sch: &dyn Schedule,
    x_hat: &[f32],
    z_t: &[f32],
    t: f64,
    s: f64,
    x_var: f64,
) -> Vec<f64> {
    let ((at, st), (as_, ss)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
    let eps: Vec<f64> = x_hat
        .iter()
        .zip(z_t)
        .map(|(&x, &z)| (f64::from(z) - at * f64::from(x)) / st)
        .collect();
    let eps_sq: f64 = eps.iter().map(|e| e * e).sum();
    let c = as_ - at * ss / st;
    let k = (ss * ss + x_hat.len() as f64 * c * c * x_var / eps_sq).sqrt();
    x_hat
        .iter()
        .zip(&eps)
        .map(|(&x, e)| as_ * f64::from(x) + k * e)
        .collect()
}

#[test]
fn addim_follows_algorithm_3() {
    let dev = seeded_device(3);
    let den = gaussian(&dev);
    let cos = schedule("name = \"cosine\"");
    let sch = cos.as_ref();
    let addim = integrator("name = \"addim\"");
    let z = normal(&dev, 8, 3);
    // Every kind of step, including t = 1 (alpha_t = 0) and the last one (s = 0), where aDDIM
    // is x_hat + sqrt(d x_var / ||eps_hat||^2) eps_hat.
    for (t, s) in [(1.0, 0.75), (0.5, 0.25), (0.125, 0.0), (1.0, 0.0)] {
        let (z_s, nfe) = one_step(&dev, sch, addim.as_ref(), &den, z.clone(), t, s);
        assert_eq!(nfe, 1);
        let x_hat = den.denoise(&z, &Level::at(sch, t)).unwrap();
        let x_var = 0.1 / (2.0 + sch.snr(t));
        let (zv, xv, got) = (z.as_vec(), x_hat.as_vec(), z_s.as_vec());
        for i in 0..8 {
            let want = addim_reference(
                sch,
                &xv[3 * i..3 * i + 3],
                &zv[3 * i..3 * i + 3],
                t,
                s,
                x_var,
            );
            for (g, w) in got[3 * i..3 * i + 3].iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() < 2e-6,
                    "({t}, {s}) row {i}: {g} vs {w}"
                );
            }
        }
        // The correction is not negligible here, so the comparison above is not DDIM's.
        let (ddim, _) = one_step(
            &dev,
            sch,
            integrator("name = \"ddim\"").as_ref(),
            &den,
            z.clone(),
            t,
            s,
        );
        assert!(
            max_diff(&z_s, &ddim) > 1e-4,
            "({t}, {s}) aDDIM should differ from DDIM"
        );
    }
}

#[test]
fn addim_without_variance_is_ddim() {
    let dev = seeded_device(4);
    let cos = schedule("name = \"cosine\"");
    let sch = cos.as_ref();
    let (ddim, addim) = (
        integrator("name = \"ddim\""),
        integrator("name = \"addim\""),
    );
    let exact = integrator("name = \"addim\"\nvariance = \"exact\"");
    // Point-mass data: the exact posterior variance is 0, so aDDIM is DDIM bit for bit.
    let point = Gaussian {
        std: 0.0,
        ..gaussian(&dev)
    };
    let z = normal(&dev, 8, 3);
    for (t, s) in [(1.0, 0.5), (0.5, 0.25), (0.25, 0.0)] {
        let (a, _) = one_step(&dev, sch, exact.as_ref(), &point, z.clone(), t, s);
        let (b, _) = one_step(&dev, sch, ddim.as_ref(), &point, z.clone(), t, s);
        assert_eq!(max_diff(&a, &b), 0.0, "exact x_var = 0 at ({t}, {s})");
    }
    // Given x_var = 0, or s = t, the teacher step is DDIM's exactly.
    let x_hat = normal(&dev, 8, 3);
    let (t, s) = (
        vec![0.9, 0.6, 0.3, 1.0, 0.5, 0.5, 0.2, 0.0],
        vec![0.8, 0.2, 0.0, 0.0, 0.5, 0.45, 0.2, 0.0],
    );
    let zeros = dev.zeros_like(&(8,));
    let args = |x_var| TeacherStep {
        dev: &dev,
        schedule: sch,
        x_hat: &x_hat,
        z_t: &z,
        t: &t,
        s: &s,
        x_var,
    };
    let want = ddim.teacher_step(args(None)).unwrap();
    assert_eq!(
        max_diff(&addim.teacher_step(args(Some(&zeros))).unwrap(), &want),
        0.0
    );
    let got = addim.teacher_step(args(None)).unwrap();
    for i in [4, 7] {
        assert_eq!(
            max_diff(&row(&dev, &got, i), &row(&dev, &z, i)),
            0.0,
            "s = t row {i}"
        );
    }
    // As s -> t aDDIM's correction vanishes like (t - s)^2 (z_var ~ (alpha_s - alpha_t sigma_s /
    // sigma_t)^2): halving the gap quarters the difference to DDIM.
    let gap = |h: f64| {
        let den = gaussian(&dev);
        let (a, _) = one_step(&dev, sch, addim.as_ref(), &den, z.clone(), 0.5, 0.5 - h);
        let (b, _) = one_step(&dev, sch, ddim.as_ref(), &den, z.clone(), 0.5, 0.5 - h);
        max_diff(&a, &b)
    };
    let (d1, d2) = (gap(0.1), gap(0.05));
    assert!(
        d1 > 1e-4 && (3.0..5.0).contains(&(d1 / d2)),
        "gap 0.1: {d1}, 0.05: {d2}"
    );
}

#[test]
fn teacher_step_matches_step() {
    let dev = seeded_device(5);
    let den = gaussian(&dev);
    for sname in ["cosine", "karras"] {
        let sch = schedule(&format!("name = \"{sname}\""));
        let sch = sch.as_ref();
        let pairs = [
            (1.0, 0.875),
            (0.875, 0.5),
            (0.5, 0.0),
            (0.3, 0.29),
            (1.0, 0.0),
            (0.125, 0.0),
        ];
        let (t, s): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let n = pairs.len();
        let z = normal(&dev, n, 3);
        let x_hat = den.denoise(&z, &Level::per_row(&dev, sch, &t)).unwrap();
        let x_var = den
            .posterior_variance(&z, &Level::per_row(&dev, sch, &t))
            .unwrap()
            .unwrap()
            * 0.75;
        for (cfg, given) in [
            ("name = \"ddim\"", None),
            ("name = \"addim\"", None),
            ("name = \"addim\"\nvariance = \"exact\"", Some(&x_var)),
        ] {
            let int = integrator(cfg);
            let got = int
                .teacher_step(TeacherStep {
                    dev: &dev,
                    schedule: sch,
                    x_hat: &x_hat,
                    z_t: &z,
                    t: &t,
                    s: &s,
                    x_var: given,
                })
                .unwrap();
            for i in 0..n {
                let (want, _) =
                    one_step(&dev, sch, int.as_ref(), &den, row(&dev, &z, i), t[i], s[i]);
                let err = max_diff(&row(&dev, &got, i), &want);
                assert!(err < 1e-6, "{sname} {cfg} ({}, {}): {err}", t[i], s[i]);
            }
        }
        // "exact" without a given x_var cannot work without the denoiser, and says so.
        let err = integrator("name = \"addim\"\nvariance = \"exact\"")
            .teacher_step(TeacherStep {
                dev: &dev,
                schedule: sch,
                x_hat: &x_hat,
                z_t: &z,
                t: &t,
                s: &s,
                x_var: None,
            })
            .unwrap_err();
        assert!(err.to_string().contains("pass x_var"), "{err}");
    }
    for name in ["heun", "ddpm", "noise-ddim"] {
        let sch = schedule("name = \"cosine\"");
        let (x, z) = (normal(&dev, 2, 3), normal(&dev, 2, 3));
        let r = integrator(&format!("name = \"{name}\"")).teacher_step(TeacherStep {
            dev: &dev,
            schedule: sch.as_ref(),
            x_hat: &x,
            z_t: &z,
            t: &[0.5, 0.5],
            s: &[0.25, 0.25],
            x_var: None,
        });
        assert!(
            r.is_err(),
            "{name} is not deterministic single-evaluation and must refuse to teach"
        );
    }
}

#[test]
fn every_schedule_is_monotone_vp_and_spans_noise_levels() {
    let names = registry::names("schedule");
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let sch = schedule(&format!("name = \"{name}\""));
        let mut prev = f64::INFINITY;
        for i in 0..=2000 {
            let t = i as f64 / 2000.0;
            let (a, s) = sch.alpha_sigma(t);
            let l = sch.logsnr(t);
            assert!(
                l <= prev,
                "{name}: log-SNR rises at t = {t} ({prev} -> {l})"
            );
            prev = l;
            assert!(
                (a * a + s * s - 1.0).abs() < 1e-12 && a >= 0.0 && s >= 0.0,
                "{name}: not VP at {t}"
            );
            if l.is_finite() {
                let from_ab = 2.0 * (a.ln() - s.ln());
                assert!(
                    (from_ab - l).abs() < 1e-9 * l.abs().max(1.0),
                    "{name}: logsnr {l} vs alpha/sigma {from_ab} at {t}"
                );
            }
        }
        // z_0 is (nearly) data and z_1 (nearly) pure noise.
        assert!(
            sch.logsnr(0.0) > 12.0 && sch.alpha_sigma(0.0).1 < 0.003,
            "{name} at t = 0"
        );
        assert!(
            sch.logsnr(1.0) < -8.0 && sch.alpha_sigma(1.0).0 < 0.02,
            "{name} at t = 1"
        );
    }
}

#[test]
fn cosine_family_endpoints_and_shifts_are_exact() {
    let cos = schedule("name = \"cosine\"");
    let shifted = |r: u32, b: u32| {
        schedule(&format!(
            "name = \"shifted-cosine\"\nresolution = {r}\nbase = {b}"
        ))
    };
    for sch in [
        cos,
        schedule("name = \"shifted-cosine\""),
        shifted(256, 64),
        shifted(32, 64),
        schedule("name = \"interpolated-cosine\""),
        schedule(
            "name = \"interpolated-cosine\"\nresolution = 512\nnoise_low = 32\nnoise_high = 256",
        ),
    ] {
        assert_eq!(sch.alpha_sigma(0.0), (1.0, 0.0), "{sch:?}");
        assert_eq!(sch.alpha_sigma(1.0), (0.0, 1.0), "{sch:?}");
        assert_eq!(
            (sch.logsnr(0.0), sch.logsnr(1.0)),
            (f64::INFINITY, f64::NEG_INFINITY)
        );
    }
    let cos = schedule("name = \"cosine\"");
    let (s256, s32) = (shifted(256, 64), shifted(32, 64));
    let interp = schedule(
        "name = \"interpolated-cosine\"\nresolution = 512\nnoise_low = 32\nnoise_high = 256",
    );
    let (lo, hi) = (shifted(512, 32), shifted(512, 256));
    for t in [0.01, 0.2, 0.5, 0.8, 0.99] {
        let c = cos.logsnr(t);
        assert!(
            (schedule("name = \"shifted-cosine\"").logsnr(t) - c).abs() < 1e-12,
            "base = resolution is no shift"
        );
        assert!(
            (s256.logsnr(t) - (c + 2.0 * (0.25f64).ln())).abs() < 1e-12,
            "256 has more noise"
        );
        assert!(
            (s32.logsnr(t) - (c + 2.0 * 2f64.ln())).abs() < 1e-12,
            "32 has less noise"
        );
        // Simple diffusion's interpolation, strong shift (noise resolution 32) toward t = 1.
        let want = t * lo.logsnr(t) + (1.0 - t) * hi.logsnr(t);
        assert!(
            (interp.logsnr(t) - want).abs() < 1e-9,
            "interpolated at {t}"
        );
        let (a, s) = interp.alpha_sigma(t);
        assert!(
            (2.0 * (a / s).ln() - want).abs() < 1e-9,
            "interpolated alpha/sigma at {t}"
        );
    }
}

#[test]
fn karras_and_linear_closed_forms() {
    let k = schedule("name = \"karras\"");
    let sigma_ve = |t: f64| {
        let (a, s) = k.alpha_sigma(t);
        s / a
    };
    assert!(
        (sigma_ve(0.0) / 0.002 - 1.0).abs() < 1e-12 && (sigma_ve(1.0) / 80.0 - 1.0).abs() < 1e-12
    );
    for t in [0.1, 0.5, 0.9] {
        let want = (80f64.powf(1.0 / 7.0)
            + (1.0 - t) * (0.002f64.powf(1.0 / 7.0) - 80f64.powf(1.0 / 7.0)))
        .powi(7);
        assert!(
            (sigma_ve(t) / want - 1.0).abs() < 1e-12,
            "karras sigma at {t}"
        );
        assert!((k.logsnr(t) + 2.0 * want.ln()).abs() < 1e-12);
    }
    let lin = schedule("name = \"linear\"");
    assert_eq!(lin.alpha_sigma(0.0), (1.0, 0.0));
    for t in [0.0, 0.3, 1.0] {
        let a2 = lin.alpha_sigma(t).0.powi(2);
        assert!(
            (a2.ln() + 0.1 * t + 9.95 * t * t).abs() < 1e-12,
            "linear at {t}"
        );
    }
    // Against DDPM's discrete alpha_bar = prod (1 - beta_i), betas linspace(1e-4, 0.02, 1000):
    // the continuous schedule matches to within the O(beta^2) terms (ln differs by ~0.07).
    let mut ln_bar = 0.0;
    for i in 0..1000 {
        let beta = 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0;
        ln_bar += (1.0 - beta).ln();
        let t = (i + 1) as f64 / 1000.0;
        let ln_cont = 2.0 * lin.alpha_sigma(t).0.ln();
        assert!(
            (ln_cont - ln_bar).abs() < 0.08,
            "step {i}: {ln_cont} vs {ln_bar}"
        );
    }
}

/// RMS error of `int` with `steps` steps against the exact probability-flow map of Gaussian data,
/// and the evaluations it took.
fn flow_error(sch: &dyn Schedule, int: &dyn Integrator, steps: usize) -> (f64, usize) {
    let dev = seeded_device(6);
    let den = gaussian(&dev);
    let z1 = normal(&dev, 256, 3);
    let mut exact = den.flow(sch, &z1.as_vec(), 1.0, 0.0);
    // A schedule still noisy at t = 0 (karras) ends with the step to sigma = 0: x_hat there.
    let (a0, s0) = sch.alpha_sigma(0.0);
    if s0 > 0.0 {
        let (g, _) = den.gain_var(a0, s0);
        for (i, e) in exact.iter_mut().enumerate() {
            let m = den.mean[i % den.mean.len()];
            *e = m + g * (*e - a0 * m);
        }
    }
    let out = sample(
        &dev,
        sch,
        int,
        &den,
        z1,
        &uniform_grid(steps),
        RowNoise::default(),
    )
    .unwrap();
    let got = out.samples.as_vec();
    let mse = got
        .iter()
        .zip(&exact)
        .map(|(&g, e)| (f64::from(g) - e).powi(2))
        .sum::<f64>()
        / got.len() as f64;
    (mse.sqrt(), out.nfe)
}

#[test]
fn gaussian_flow_convergence_orders() {
    let (cos, karras) = (schedule("name = \"cosine\""), schedule("name = \"karras\""));
    let (ddim, heun) = (integrator("name = \"ddim\""), integrator("name = \"heun\""));
    for (label, sch, int, steps, order) in [
        ("ddim/cosine", &cos, &ddim, [8, 16, 32], 1.0),
        ("heun/cosine", &cos, &heun, [4, 8, 16], 2.0),
        ("heun/karras", &karras, &heun, [8, 16, 32], 2.0),
    ] {
        let e: Vec<f64> = steps
            .iter()
            .map(|&n| flow_error(sch.as_ref(), int.as_ref(), n).0)
            .collect();
        for w in e.windows(2) {
            let observed = (w[0] / w[1]).log2();
            assert!(
                (observed - order).abs() < 0.35,
                "{label}: errors {e:?}, order {observed} not {order}"
            );
        }
    }
}

#[test]
fn nfe_counts() {
    let (cos, karras) = (schedule("name = \"cosine\""), schedule("name = \"karras\""));
    for (sch, name, per_t) in [
        (&cos, "ddim", [8, 16]),
        (&cos, "addim", [8, 16]),
        (&cos, "ddpm", [8, 16]),
        (&cos, "noise-ddim", [8, 16]),
        // karras's t = 0 is sigma_min: every step Heun's two, then one to sigma = 0.
        (&karras, "heun", [17, 33]),
        (&karras, "ddim", [9, 17]),
        // A cosine schedule starts at alpha = 0, where Heun takes a DDIM step.
        (&cos, "heun", [14, 30]),
    ] {
        for (steps, want) in [8, 16].into_iter().zip(per_t) {
            let (_, nfe) = flow_error(
                sch.as_ref(),
                integrator(&format!("name = \"{name}\"")).as_ref(),
                steps,
            );
            assert_eq!(nfe, want, "{name} with {steps} steps");
        }
    }
}

/// Samples of `int` from seeded noise (the seed also drives a stochastic sampler's noise).
fn draw(int: &dyn Integrator, seed: u64, rows: usize, steps: usize) -> Vec<f32> {
    let dev = seeded_device(seed);
    let sch = schedule("name = \"cosine\"");
    let z1 = normal(&dev, rows, 3);
    sample(
        &dev,
        sch.as_ref(),
        int,
        &gaussian(&dev),
        z1,
        &uniform_grid(steps),
        RowNoise { seed, first_row: 0 },
    )
    .unwrap()
    .samples
    .as_vec()
}

#[test]
fn stochastic_samplers_repeat_with_their_seed() {
    for name in ["ddpm", "noise-ddim"] {
        let int = integrator(&format!("name = \"{name}\""));
        let a = draw(int.as_ref(), 7, 16, 8);
        assert_eq!(
            a,
            draw(int.as_ref(), 7, 16, 8),
            "{name}: same seed, same samples"
        );
        assert_ne!(
            a,
            draw(int.as_ref(), 8, 16, 8),
            "{name}: another seed, other samples"
        );
    }
    // The noise is the sampler's own: from the same z_1 it moves off the deterministic path.
    let dev = seeded_device(9);
    let (den, sch, z) = (
        gaussian(&dev),
        schedule("name = \"cosine\""),
        normal(&dev, 16, 3),
    );
    let (ddim, _) = one_step(
        &dev,
        sch.as_ref(),
        integrator("name = \"ddim\"").as_ref(),
        &den,
        z.clone(),
        0.5,
        0.25,
    );
    for name in ["ddpm", "noise-ddim"] {
        let (x, _) = one_step(
            &dev,
            sch.as_ref(),
            integrator(&format!("name = \"{name}\"")).as_ref(),
            &den,
            z.clone(),
            0.5,
            0.25,
        );
        assert!(max_diff(&x, &ddim) > 1e-3, "{name} adds no noise");
    }
}

/// Output variance per coordinate of ancestral sampling on N(m, std^2) data, in closed form: every
/// step is linear-Gaussian, z_s = (c_z + c_x g_t) z_t + const + sd_{t->s} xi.
fn ddpm_variance(sch: &dyn Schedule, den: &Gaussian, steps: usize) -> f64 {
    let grid = uniform_grid(steps);
    let mut var = 1.0;
    for w in grid.windows(2) {
        let (t, s) = (w[0], w[1]);
        let ((at, st), (as_, ss)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
        let g = den.gain_var(at, st).0;
        if s == 0.0 {
            return g * g * var;
        }
        let r = (sch.logsnr(t) - sch.logsnr(s)).exp();
        let (c_z, c_x) = (at / as_ * (ss / st).powi(2), as_ * (1.0 - r));
        var = (c_z + c_x * g).powi(2) * var + ss * ss * (1.0 - r);
    }
    unreachable!("the grid ends at 0")
}

#[test]
fn ddpm_matches_gaussian_moments() {
    let dev = seeded_device(10);
    let den = gaussian(&dev);
    let sch = schedule("name = \"cosine\"");
    let ddpm = integrator("name = \"ddpm\"");
    let rows = 8000;
    for (steps, target) in [(8, None), (1000, Some(0.25))] {
        let want = ddpm_variance(sch.as_ref(), &den, steps);
        let x = draw(ddpm.as_ref(), 11, rows, steps);
        let (mut mean, mut var) = ([0.0f64; 3], 0.0);
        for (k, &v) in x.iter().enumerate() {
            mean[k % 3] += f64::from(v) / rows as f64;
        }
        for (k, &v) in x.iter().enumerate() {
            var += (f64::from(v) - mean[k % 3]).powi(2) / (x.len() - 3) as f64;
        }
        // Four standard errors: of each mean sqrt(var/rows), of the pooled variance var sqrt(2/n).
        for j in 0..3 {
            assert!(
                (mean[j] - den.mean[j]).abs() < 4.0 * (want / rows as f64).sqrt(),
                "{steps} steps: mean {mean:?}"
            );
        }
        assert!(
            (var - want).abs() < 4.0 * want * (2.0 / x.len() as f64).sqrt(),
            "{steps} steps: var {var} vs {want}"
        );
        // With many steps ancestral sampling reaches the data distribution (its bias is O(1/T)).
        if let Some(target) = target {
            assert!(
                (want - target).abs() < 0.003,
                "1000-step DDPM variance {want}"
            );
        }
    }
}

#[test]
fn noise_ddim_adds_addims_variance_as_noise() {
    // One step t -> s: noise DDIM = DDIM + c sqrt(x_var) xi with c = alpha_s - alpha_t sigma_s /
    // sigma_t, the variance aDDIM adds deterministically.
    let dev = seeded_device(12);
    let den = gaussian(&dev);
    let sch = schedule("name = \"cosine\"");
    let (t, s) = (0.6, 0.4);
    let z = normal(&dev, 4000, 3);
    for (cfg, x_var) in [
        ("name = \"noise-ddim\"", 0.1 / (2.0 + sch.snr(t))),
        ("name = \"noise-ddim\"\nvariance = \"exact\"\neta = 0.5", {
            let (a, sg) = sch.alpha_sigma(t);
            0.5 * den.gain_var(a, sg).1
        }),
    ] {
        let (noisy, nfe) = one_step(
            &dev,
            sch.as_ref(),
            integrator(cfg).as_ref(),
            &den,
            z.clone(),
            t,
            s,
        );
        assert_eq!(nfe, 1);
        let (ddim, _) = one_step(
            &dev,
            sch.as_ref(),
            integrator("name = \"ddim\"").as_ref(),
            &den,
            z.clone(),
            t,
            s,
        );
        let diff: Vec<f64> = noisy
            .as_vec()
            .iter()
            .zip(ddim.as_vec())
            .map(|(a, b)| f64::from(a - b))
            .collect();
        let n = diff.len() as f64;
        let mean = diff.iter().sum::<f64>() / n;
        let var = diff.iter().map(|d| d * d).sum::<f64>() / n;
        let c = ddim_coeffs(sch.as_ref(), t, s).0;
        let want = c * c * x_var;
        assert!(mean.abs() < 4.0 * (want / n).sqrt(), "{cfg}: mean {mean}");
        assert!(
            (var / want - 1.0).abs() < 4.0 * (2.0 / n).sqrt(),
            "{cfg}: var {var} vs {want}"
        );
    }
}

#[test]
fn calibration_table_roundtrip_and_addim_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xvar.json");
    let sch = schedule("name = \"cosine\"");
    // A table holding the analytic values at the grid times reproduces analytic aDDIM there.
    let grid = uniform_grid(8);
    let values: Vec<f64> = grid.iter().map(|&t| 0.1 / (2.0 + sch.snr(t))).collect();
    let table = XVarTable::new(grid.clone(), values.clone()).unwrap();
    assert_eq!(table.times().first(), Some(&0.0), "stored increasing");
    table.save(&path).unwrap();
    let back = XVarTable::load(&path).unwrap();
    // serde_json reads floats to within an ulp, not always bit for bit.
    assert_eq!(back.times(), table.times());
    for (a, b) in back.values().iter().zip(table.values()) {
        assert!((a - b).abs() <= 1e-15 * b.abs(), "{a} vs {b}");
    }
    // Linear in between, constant beyond the ends.
    let mid = back.interpolate(0.5625);
    let (v1, v2) = (back.interpolate(0.5), back.interpolate(0.625));
    assert!((mid - 0.5 * (v1 + v2)).abs() < 1e-15 && mid != v1);
    assert_eq!(
        (back.interpolate(-1.0), back.interpolate(2.0)),
        (back.values()[0], back.values()[8])
    );

    let dev = seeded_device(13);
    let den = gaussian(&dev);
    let tabled = integrator(&format!(
        "name = \"addim\"\nvariance = \"table\"\ntable = {:?}",
        path.display().to_string()
    ));
    let analytic = integrator("name = \"addim\"");
    let z = normal(&dev, 8, 3);
    for w in grid.windows(2) {
        let (a, _) = one_step(
            &dev,
            sch.as_ref(),
            tabled.as_ref(),
            &den,
            z.clone(),
            w[0],
            w[1],
        );
        let (b, _) = one_step(
            &dev,
            sch.as_ref(),
            analytic.as_ref(),
            &den,
            z.clone(),
            w[0],
            w[1],
        );
        assert_eq!(max_diff(&a, &b), 0.0, "table at t = {}", w[0]);
    }

    // Bad tables are refused with the reason.
    for (t, v, why) in [
        (vec![0.0, 0.5], vec![0.1], "as many"),
        (vec![0.0, 0.0], vec![0.1, 0.2], "twice"),
        (vec![0.0, 0.5], vec![0.1, -0.2], "non-negative"),
    ] {
        let e = XVarTable::new(t, v).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    std::fs::write(&path, "{\"t\": [0.0]}").unwrap();
    let e = format!("{:#}", XVarTable::load(&path).unwrap_err());
    assert!(e.contains("xvar"), "{e}");
}

#[test]
fn configs_refuse_bad_input_with_the_choices() {
    let err = |toml: &str| match plugin_from_toml::<Box<dyn Integrator>>(toml) {
        Ok(v) => panic!("{toml} was accepted: {v:?}"),
        Err(e) => e.to_string(),
    };
    let e = err("name = \"rk45\"");
    for name in registry::names("integrator") {
        assert!(
            e.contains("valid:") && e.contains(name),
            "{e} should list {name}"
        );
    }
    assert!(err("name = \"addim\"\netta = 0.5").contains("etta"));
    assert!(err("name = \"heun\"\nsteps = 3").contains("steps"));
    assert!(err("name = \"addim\"\neta = -1.0").contains(">= 0"));
    let e = err("name = \"noise-ddim\"\nvariance = \"magic\"");
    assert!(
        ["analytic", "exact", "table"].iter().all(|v| e.contains(v)),
        "{e}"
    );

    let serr = |toml: &str| {
        plugin_from_toml::<Box<dyn Schedule>>(toml)
            .unwrap_err()
            .to_string()
    };
    let e = serr("name = \"cosin\"");
    assert!(
        registry::names("schedule").iter().all(|n| e.contains(n)),
        "{e}"
    );
    assert!(serr("name = \"karras\"\nsigma_min = 0.0").contains("> 0"));
    assert!(serr("name = \"shifted-cosine\"\nresolution = 0").contains("nonzero"));
    assert!(serr("name = \"linear\"\nbeta = 1.0").contains("beta"));

    // Inconsistent x_var settings fail at the first step, naming the fix.
    let dev = seeded_device(14);
    let den = gaussian(&dev);
    let sch = schedule("name = \"cosine\"");
    let step = |toml: &str| {
        let mut ctx = StepCtx::new(&dev, sch.as_ref(), &den);
        integrator(toml)
            .step(&mut ctx, normal(&dev, 2, 3), 0.5, 0.25)
            .unwrap_err()
            .to_string()
    };
    assert!(step("name = \"addim\"\nvariance = \"table\"").contains("needs `table"));
    assert!(step("name = \"addim\"\ntable = \"x.json\"").contains("only read with"));
    assert!(
        step("name = \"addim\"\nvariance = \"table\"\ntable = \"/nonexistent.json\"")
            .contains("cannot read")
    );

    // The x_var fields are what `fewstep list` shows for both aDDIM-style integrators.
    for name in ["addim", "noise-ddim"] {
        let fields = registry::fields(registry::find("integrator", name).unwrap());
        let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["eta", "table", "variance"], "{name}");
        assert!(fields[0].2.contains("0.75"), "{:?}", fields[0]);
        assert_eq!(fields[2].1, "analytic | exact | table");
    }
    // Built in code, the x_var config has the same defaults as `{ name = "addim" }`.
    let default: Box<dyn Integrator> = Box::new(fewstep::plugins::addim::Addim::default());
    let from_toml = integrator("name = \"addim\"");
    assert_eq!(format!("{default:?}"), format!("{from_toml:?}"));
}
