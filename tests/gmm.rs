//! The `gmm` denoiser against brute-force quadrature, the built-in mixture sets, and a DDIM run on
//! the exact denoiser.

use fewstep::config::plugin_from_toml;
use fewstep::data::builtin::mixtures;
use fewstep::data::builtin::{write_set, BuiltSet};
use fewstep::data::{read_data, write_data, DataArray, Mixture};
use fewstep::denoiser::{BuildCtx, Denoiser, DenoiserSpec, Level};
use fewstep::integrator::{Integrator, RowNoise};
use fewstep::sampling::sample;
use fewstep::schedule::{uniform_grid, Schedule};
use fewstep::tensor::{batch_from_vec, normal, seeded_device, Dev};
use std::path::Path;

fn cosine() -> Box<dyn Schedule> {
    plugin_from_toml("name = \"cosine\"").unwrap()
}

fn build(dev: &Dev, toml: &str, data: Option<&Path>) -> anyhow::Result<Box<dyn Denoiser>> {
    let spec: Box<dyn DenoiserSpec> = plugin_from_toml(toml)?;
    spec.build(&BuildCtx {
        dev: dev.clone(),
        data: data.map(Path::to_path_buf),
        checkpoint: None,
    })
}

/// Writes built-in set `name` (a few rows) to `dir` and returns its path.
fn write_builtin(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.h5"));
    write_set(&path, &mixtures::make(name, 16, 0).unwrap(), "test").unwrap();
    path
}

/// E[x | z] and Var[x | z] of a 1-D mixture by the trapezoid rule over x, in log space. The grid
/// covers where both the prior and the likelihood are non-negligible, 40 points per width of the
/// narrowest posterior component.
fn quadrature(m: &Mixture, alpha: f64, sigma: f64, z: f64) -> (f64, f64) {
    let comps = || (0..m.components()).map(|k| (m.weights[k], m.means[k], m.stds[k]));
    let log_prior = |x: f64| {
        let terms: Vec<f64> = comps()
            .map(|(w, mu, s)| w.ln() - s.ln() - 0.5 * ((x - mu) / s).powi(2))
            .collect();
        let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        top + terms.iter().map(|l| (l - top).exp()).sum::<f64>().ln()
    };
    let mut lo = comps()
        .map(|(_, mu, s)| mu - 12.0 * s)
        .fold(f64::MAX, f64::min);
    let mut hi = comps()
        .map(|(_, mu, s)| mu + 12.0 * s)
        .fold(f64::MIN, f64::max);
    let mut width = comps().map(|c| c.2).fold(f64::MAX, f64::min);
    if alpha > 0.0 {
        let (centre, spread) = (z / alpha, sigma / alpha);
        lo = lo.max(centre - 12.0 * spread);
        hi = hi.min(centre + 12.0 * spread);
        width = width.min(spread);
    }
    assert!(
        lo < hi,
        "z = {z} is too atypical for this quadrature window"
    );
    let n = ((hi - lo) / (width / 40.0)).ceil() as usize;
    let xs: Vec<f64> = (0..=n)
        .map(|i| lo + (hi - lo) * i as f64 / n as f64)
        .collect();
    let logp: Vec<f64> = xs
        .iter()
        .map(|&x| log_prior(x) - 0.5 * ((z - alpha * x) / sigma).powi(2))
        .collect();
    let top = logp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logp.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = w.iter().sum();
    let mean = xs.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>() / total;
    let var = xs
        .iter()
        .zip(&w)
        .map(|(x, w)| (x - mean).powi(2) * w)
        .sum::<f64>()
        / total;
    (mean, var)
}

const TIMES: [f64; 12] = [
    1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 0.99, 1.0,
];

#[test]
fn posterior_matches_quadrature_in_1d() {
    let dev = seeded_device(0);
    let dir = tempfile::tempdir().unwrap();
    let two_modes = write_builtin(dir.path(), "two-modes");
    let asym = "name = \"gmm\"\n[mixture]\nweights = [0.5, 0.3, 0.2]\n\
                means = [[-1.2], [0.3], [2.0]]\nstds = [0.3, 0.1, 0.5]";
    let cases = [
        (
            build(&dev, "name = \"gmm\"", Some(&two_modes)).unwrap(),
            Mixture::read(&two_modes).unwrap().unwrap(),
        ),
        (
            build(&dev, asym, None).unwrap(),
            Mixture::new(
                vec![0.5, 0.3, 0.2],
                vec![-1.2, 0.3, 2.0],
                vec![0.3, 0.1, 0.5],
                1,
            )
            .unwrap(),
        ),
    ];
    let schedule = cosine();
    let (mut worst_mean, mut worst_var) = (0.0f64, 0.0f64);
    for (gmm, m) in &cases {
        for &t in &TIMES {
            let (alpha, sigma) = schedule.alpha_sigma(t);
            // Typical points of p(z_t) around each mode, and the points between modes where the
            // posterior is split.
            let mut xs: Vec<f64> = m.means.clone();
            xs.extend(m.means.windows(2).map(|p| (p[0] + p[1]) / 2.0));
            let zs: Vec<f32> = xs
                .iter()
                .flat_map(|&x| [-1.5, 0.0, 0.7].map(|e| (alpha * x + sigma * e) as f32))
                .collect();
            let z = batch_from_vec(&dev, zs.clone(), zs.len(), 1);
            let level = Level::at(schedule.as_ref(), t);
            let mean = gmm.denoise(&z, &level).unwrap().as_vec();
            let var = gmm
                .posterior_variance(&z, &level)
                .unwrap()
                .unwrap()
                .as_vec();
            for (i, &zi) in zs.iter().enumerate() {
                let (want_mean, want_var) = quadrature(m, alpha, sigma, zi as f64);
                let err_mean = (mean[i] as f64 - want_mean).abs() / (1.0 + want_mean.abs());
                let err_var = (var[i] as f64 - want_var).abs() / want_var;
                assert!(
                    err_mean < 1e-5 && err_var < 1e-4,
                    "t = {t}, z = {zi}: mean {} vs {want_mean}, var {} vs {want_var}",
                    mean[i],
                    var[i]
                );
                worst_mean = worst_mean.max(err_mean);
                worst_var = worst_var.max(err_var);
            }
        }
    }
    eprintln!("worst relative error: mean {worst_mean:.1e}, variance {worst_var:.1e}");
}

/// Mean `[D]` and covariance `[D, D]` of a mixture.
fn mixture_moments(m: &Mixture) -> (Vec<f64>, Vec<f64>) {
    let d = m.dim;
    let mut mean = vec![0.0; d];
    let mut cov = vec![0.0; d * d];
    for k in 0..m.components() {
        let (w, mu) = (m.weights[k], m.mean(k));
        for i in 0..d {
            mean[i] += w * mu[i];
            cov[i * d + i] += w * m.stds[k].powi(2);
            for j in 0..d {
                cov[i * d + j] += w * mu[i] * mu[j];
            }
        }
    }
    for i in 0..d {
        for j in 0..d {
            cov[i * d + j] -= mean[i] * mean[j];
        }
    }
    (mean, cov)
}

/// Mean and covariance of row-major samples.
fn sample_moments(values: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = values.len() / d;
    let mut mean = vec![0.0; d];
    for row in values.chunks(d) {
        for i in 0..d {
            mean[i] += row[i] as f64 / n as f64;
        }
    }
    let mut cov = vec![0.0; d * d];
    for row in values.chunks(d) {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += (row[i] as f64 - mean[i]) * (row[j] as f64 - mean[j]) / n as f64;
            }
        }
    }
    (mean, cov)
}

/// The error of a call expected to fail, with its causes.
fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn endpoints_are_exact_and_extremes_finite() {
    let dev = seeded_device(1);
    let m = mixtures::mixture("gmm64").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gmm = build(
        &dev,
        "name = \"gmm\"",
        Some(&write_builtin(dir.path(), "gmm64")),
    )
    .unwrap();
    let (b, d) = (64, m.dim);
    let (prior_mean, prior_cov) = mixture_moments(&m);
    let prior_var = (0..d).map(|i| prior_cov[i * d + i]).sum::<f64>() / d as f64;
    let schedule = cosine();

    // t = 1 (alpha = 0): z says nothing, the answer is the prior's mean and variance.
    let z = normal(&dev, b, d) * 3.0;
    let at_one = Level::at(schedule.as_ref(), 1.0);
    let mean = gmm.denoise(&z, &at_one).unwrap().as_vec();
    let var = gmm
        .posterior_variance(&z, &at_one)
        .unwrap()
        .unwrap()
        .as_vec();
    for row in 0..b {
        let got: Vec<f64> = mean[row * d..(row + 1) * d]
            .iter()
            .map(|&x| x as f64)
            .collect();
        assert!(max_abs_diff(&got, &prior_mean) < 1e-6, "row {row}: {got:?}");
        assert!((var[row] as f64 - prior_var).abs() < 1e-6 * prior_var);
    }

    // t = 0 (sigma = 0): z is the data, up to rounding of the responsibilities' sum.
    let at_zero = Level::at(schedule.as_ref(), 0.0);
    let got = gmm.denoise(&z, &at_zero).unwrap().as_vec();
    for (x, z) in got.iter().zip(z.as_vec()) {
        assert!((x - z).abs() <= 1e-6 * (1.0 + z.abs()), "{x} vs {z}");
    }
    let var = gmm.posterior_variance(&z, &at_zero).unwrap().unwrap();
    assert!(
        var.as_vec().iter().all(|&v| (0.0..1e-12).contains(&v)),
        "{var:?}"
    );

    // Far outside the data, at every time: finite answers, never NaN.
    let far = normal(&dev, b, d) * 1e3;
    for t in [0.0, 1e-6, 1e-4, 0.3, 0.5, 0.999, 1.0] {
        let level = Level::at(schedule.as_ref(), t);
        let mean = gmm.denoise(&far, &level).unwrap().as_vec();
        let var = gmm
            .posterior_variance(&far, &level)
            .unwrap()
            .unwrap()
            .as_vec();
        assert!(mean.iter().all(|x| x.is_finite()), "t = {t}");
        assert!(var.iter().all(|v| v.is_finite() && *v >= 0.0), "t = {t}");
    }
}

#[test]
fn per_row_levels_match_scalar_levels() {
    let dev = seeded_device(2);
    let dir = tempfile::tempdir().unwrap();
    let gmm = build(
        &dev,
        "name = \"gmm\"",
        Some(&write_builtin(dir.path(), "gmm64")),
    )
    .unwrap();
    let d = gmm.dim();
    let schedule = cosine();
    let ts: Vec<f64> = TIMES.iter().chain(&[0.0, 0.42]).cloned().collect();
    let z = normal(&dev, ts.len(), d);
    let rows = Level::per_row(&dev, schedule.as_ref(), &ts);
    let mean = gmm.denoise(&z, &rows).unwrap().as_vec();
    let var = gmm.posterior_variance(&z, &rows).unwrap().unwrap().as_vec();
    let zs = z.as_vec();
    for (i, &t) in ts.iter().enumerate() {
        let zi = batch_from_vec(&dev, zs[i * d..(i + 1) * d].to_vec(), 1, d);
        let level = Level::at(schedule.as_ref(), t);
        let want_mean = gmm.denoise(&zi, &level).unwrap().as_vec();
        let want_var = gmm
            .posterior_variance(&zi, &level)
            .unwrap()
            .unwrap()
            .as_vec()[0];
        for (got, want) in mean[i * d..(i + 1) * d].iter().zip(&want_mean) {
            assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "t = {t}");
        }
        // Per-row levels are f32: sigma^2 at t = 1e-4 carries f32's relative rounding.
        assert!(
            (var[i] - want_var).abs() <= 1e-5 * want_var,
            "t = {t}: {} vs {want_var}",
            var[i]
        );
    }
    // A level with the wrong number of rows is refused, not broadcast.
    let short = Level::per_row(&dev, schedule.as_ref(), &ts[1..]);
    let err = err_of(gmm.denoise(&z, &short));
    assert!(err.contains("rows"), "{err}");
}

#[test]
fn mixture_files_round_trip_and_errors_say_how_to_make_one() {
    let dev = seeded_device(3);
    let dir = tempfile::tempdir().unwrap();
    let set = mixtures::make("ring8", 100, 5).unwrap();
    let path = dir.path().join("ring8.h5");
    write_set(&path, &set, "test").unwrap();
    let m = Mixture::read(&path).unwrap().unwrap();
    assert_eq!(Some(&m), set.mixture.as_ref());
    assert_eq!(read_data(&path).unwrap(), set.data);

    // Built from the file, the denoiser answers as one built from the same mixture inline.
    let inline = format!(
        "name = \"gmm\"\n[mixture]\nweights = {:?}\nmeans = {:?}\nstds = {:?}",
        m.weights,
        m.means.chunks(2).collect::<Vec<_>>(),
        m.stds
    );
    let from_file = build(&dev, "name = \"gmm\"", Some(&path)).unwrap();
    let from_toml = build(&dev, &inline, None).unwrap();
    let z = normal(&dev, 32, 2);
    let level = Level::at(cosine().as_ref(), 0.3);
    assert_eq!(
        from_file.denoise(&z, &level).unwrap().as_vec(),
        from_toml.denoise(&z, &level).unwrap().as_vec()
    );

    let none = err_of(build(&dev, "name = \"gmm\"", None));
    assert!(none.contains("fewstep data make ring8"), "{none}");
    let plain = dir.path().join("plain.h5");
    write_data(&plain, &DataArray::new(vec![0.0; 4], vec![2, 2]), &vec![]).unwrap();
    let err = err_of(build(&dev, "name = \"gmm\"", Some(&plain)));
    assert!(
        err.contains("/mixture") && err.contains("fewstep data make"),
        "{err}"
    );
    let bad =
        "name = \"gmm\"\n[mixture]\nweights = [1.0]\nmeans = [[0.0]]\nstds = [1.0]\nextra = 1";
    assert!(build(&dev, bad, None).is_err());
    let ragged =
        "name = \"gmm\"\n[mixture]\nweights = [1, 1]\nmeans = [[0.0], [0.0, 1.0]]\nstds = [1, 1]";
    assert!(build(&dev, ragged, None).is_err());
}

#[test]
fn make_is_deterministic_and_samples_the_mixture() {
    let same = |a: &BuiltSet, b: &BuiltSet| a.data == b.data && a.labels == b.labels;
    for name in ["two-modes", "ring8", "gmm64"] {
        let a = mixtures::make(name, 500, 11).unwrap();
        assert!(same(&a, &mixtures::make(name, 500, 11).unwrap()), "{name}");
        let other = mixtures::make(name, 500, 12).unwrap();
        assert!(
            !same(&a, &other),
            "{name}: seeds 11 and 12 gave the same rows"
        );
        // The mixture itself does not depend on the sample seed.
        assert_eq!(a.mixture, other.mixture, "{name}");
    }
    let gmm64 = mixtures::mixture("gmm64").unwrap();
    assert_eq!((gmm64.components(), gmm64.dim), (10, 64));
    for k in 0..10 {
        let norm = gmm64.mean(k).iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-12);
    }

    // Moments of 20000 rows against the mixture's: standard errors are <= 0.006 here.
    for name in ["two-modes", "ring8", "gmm64"] {
        let set = mixtures::make(name, 20_000, 0).unwrap();
        let m = set.mixture.unwrap();
        let (mean, cov) = sample_moments(&set.data.values, m.dim);
        let (want_mean, want_cov) = mixture_moments(&m);
        assert!(max_abs_diff(&mean, &want_mean) < 0.03, "{name} mean");
        assert!(max_abs_diff(&cov, &want_cov) < 0.03, "{name} covariance");
        // Labels name the component each row came from: rows sit near their mean.
        let labels = set.labels.unwrap();
        for (row, &k) in set.data.values.chunks(m.dim).zip(&labels) {
            let s = m.stds[k as usize];
            let dist2: f64 = row
                .iter()
                .zip(m.mean(k as usize))
                .map(|(&x, mu)| (x as f64 - mu).powi(2))
                .sum();
            assert!(dist2 < (m.dim as f64 + 12.0 * (m.dim as f64).sqrt() + 30.0) * s * s);
        }
    }
    let err = err_of(mixtures::make("ring9", 10, 0));
    assert!(err.contains("ring8"), "{err}");
}

#[test]
fn ddim_on_the_exact_denoiser_samples_ring8() {
    let dev = seeded_device(4);
    let dir = tempfile::tempdir().unwrap();
    let path = write_builtin(dir.path(), "ring8");
    let m = Mixture::read(&path).unwrap().unwrap();
    let gmm = build(&dev, "name = \"gmm\"", Some(&path)).unwrap();
    let ddim: Box<dyn Integrator> = plugin_from_toml("name = \"ddim\"").unwrap();
    let n = 8192;
    let z1 = normal(&dev, n, 2);
    let out = sample(
        &dev,
        cosine().as_ref(),
        ddim.as_ref(),
        gmm.as_ref(),
        z1,
        &uniform_grid(512),
        RowNoise::default(),
    )
    .unwrap();
    assert_eq!(out.nfe, 512);
    let x = out.samples.as_vec();
    let (mean, cov) = sample_moments(&x, 2);
    let (want_mean, want_cov) = mixture_moments(&m);
    eprintln!("mean {mean:?} vs {want_mean:?}; cov {cov:?} vs {want_cov:?}");
    // Standard errors with 8192 samples: 0.008 for the mean, 0.004 for the covariance.
    assert!(max_abs_diff(&mean, &want_mean) < 0.03);
    assert!(max_abs_diff(&cov, &want_cov) < 0.02);
    // Every mode is hit about 1/8 of the time, and samples sit on the ring.
    let mut counts = [0usize; 8];
    let mut spread = 0.0;
    for p in x.chunks(2) {
        let k = (0..8)
            .min_by(|&a, &b| {
                let d = |k: usize| (p[0] as f64 - m.mean(k)[0]).hypot(p[1] as f64 - m.mean(k)[1]);
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        counts[k] += 1;
        spread += ((p[0] as f64 - m.mean(k)[0]).powi(2) + (p[1] as f64 - m.mean(k)[1]).powi(2))
            / (2 * n) as f64;
    }
    eprintln!(
        "mode counts {counts:?}, within-mode std {:.4}",
        spread.sqrt()
    );
    for c in counts {
        assert!((c as f64 / n as f64 - 0.125).abs() < 0.02, "{counts:?}");
    }
    assert!(
        (spread.sqrt() - 0.05).abs() < 0.005,
        "within-mode std {}",
        spread.sqrt()
    );
}
