//! Sample-quality metrics against closed forms, and `fewstep eval` end to end.

use fewstep::data::builtin::{write_set, BuiltSet};
use fewstep::data::{write_data, DataArray, Mixture};
use fewstep::metrics::{self, evaluate, fd, frechet, mode_kl, nll, sw2};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::process::Command;

/// n rows of N(mean, diag(std^2)).
fn gaussian(n: usize, mean: &[f64], std: &[f64], seed: u64) -> DataArray {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = mean.len();
    let values = (0..n * d)
        .map(|i| {
            let z: f64 = rng.sample(StandardNormal);
            (mean[i % d] + std[i % d] * z) as f32
        })
        .collect();
    DataArray::new(values, vec![n, d])
}

/// n rows from `mix`, component k drawn with probability `weights[k]` (not necessarily the
/// mixture's own).
fn from_mixture(mix: &Mixture, weights: &[f64], n: usize, seed: u64) -> DataArray {
    let mut rng = StdRng::seed_from_u64(seed);
    let total: f64 = weights.iter().sum();
    let mut values = Vec::with_capacity(n * mix.dim);
    for _ in 0..n {
        let mut u = rng.gen::<f64>() * total;
        let k = weights
            .iter()
            .position(|w| {
                u -= w;
                u < 0.0
            })
            .unwrap_or(weights.len() - 1);
        for &m in mix.mean(k) {
            let z: f64 = rng.sample(StandardNormal);
            values.push((m + mix.stds[k] * z) as f32);
        }
    }
    DataArray::new(values, vec![n, mix.dim])
}

/// Four well-separated modes in 2-D.
fn four_modes() -> Mixture {
    Mixture::new(
        vec![0.1, 0.2, 0.3, 0.4],
        vec![-3.0, 0.0, 3.0, 0.0, 0.0, -3.0, 0.0, 3.0],
        vec![0.2, 0.3, 0.25, 0.4],
        2,
    )
    .unwrap()
}

/// Mixes coordinates with a fixed matrix, so the covariance is not diagonal.
fn correlate(x: &DataArray, seed: u64) -> DataArray {
    let d = x.row_dim();
    let mut rng = StdRng::seed_from_u64(seed);
    let a: Vec<f64> = (0..d * d).map(|_| rng.sample(StandardNormal)).collect();
    let values = x
        .values
        .chunks_exact(d)
        .flat_map(|r| {
            (0..d).map(|i| (0..d).map(|j| a[i * d + j] * f64::from(r[j])).sum::<f64>() as f32)
        })
        .collect();
    DataArray::new(values, x.shape.clone())
}

#[test]
fn fd_of_a_set_with_itself_is_zero_and_invariant_to_row_order() {
    let x = correlate(&gaussian(3000, &[0.5; 16], &[1.0; 16], 1), 2);
    let y = correlate(&gaussian(2000, &[0.0; 16], &[1.3; 16], 3), 2);
    let self_fd = fd(&x, &x).unwrap();
    assert!(self_fd.abs() < 1e-8, "FD(x, x) = {self_fd}");

    let d = x.row_dim();
    let mut rows: Vec<&[f32]> = x.values.chunks_exact(d).collect();
    rows.reverse();
    rows.swap(7, 1500);
    let permuted = DataArray::new(rows.concat(), x.shape.clone());
    let (a, b) = (fd(&x, &y).unwrap(), fd(&permuted, &y).unwrap());
    assert!(a > 1.0, "distinct sets must be far apart, FD = {a}");
    assert!((a - b).abs() < 1e-9 * a, "row order changed FD: {a} vs {b}");
    let sym = fd(&y, &x).unwrap();
    assert!((a - sym).abs() < 1e-8 * a, "FD not symmetric: {a} vs {sym}");
}

#[test]
fn fd_matches_the_diagonal_closed_form() {
    let (mu1, s1): ([f64; 6], [f64; 6]) = (
        [0.0, 1.0, -0.5, 2.0, 0.0, 0.3],
        [1.0, 0.5, 2.0, 1.5, 0.2, 1.0],
    );
    let (mu2, s2): ([f64; 6], [f64; 6]) = (
        [0.5, 1.0, 0.5, 1.0, 0.0, 0.0],
        [1.0, 1.5, 1.0, 0.5, 0.4, 3.0],
    );
    // ||dmu||^2 + sum (sqrt(a) - sqrt(b))^2 with a = s1^2, b = s2^2.
    let exact: f64 = mu1
        .iter()
        .zip(&mu2)
        .zip(s1.iter().zip(&s2))
        .map(|((m1, m2), (a, b))| (m1 - m2).powi(2) + (a - b).powi(2))
        .sum();
    let got = fd(
        &gaussian(40_000, &mu1, &s1, 10),
        &gaussian(40_000, &mu2, &s2, 11),
    )
    .unwrap();
    assert!(
        (got - exact).abs() < 0.03 * exact,
        "FD {got} vs closed form {exact}"
    );
}

#[test]
fn mixture_moments_and_fd_against_them() {
    let mix = four_modes();
    let (mu, c) = metrics::mixture_moments(&mix);
    // By hand: mean sum_k w_k mu_k; the modes sit on the axes, so the covariance is diagonal.
    let (w, m) = (&mix.weights, |k: usize, i: usize| mix.mean(k)[i]);
    for i in 0..2 {
        let mean: f64 = (0..4).map(|k| w[k] * m(k, i)).sum();
        let second: f64 = (0..4)
            .map(|k| w[k] * (mix.stds[k].powi(2) + m(k, i).powi(2)))
            .sum();
        assert!(
            (mu[i] - mean).abs() < 1e-12,
            "mean {i}: {} vs {mean}",
            mu[i]
        );
        let var = second - mean * mean;
        assert!(
            (c[(i, i)] - var).abs() < 1e-12,
            "var {i}: {} vs {var}",
            c[(i, i)]
        );
    }
    let cross: f64 = (0..4).map(|k| w[k] * m(k, 0) * m(k, 1)).sum::<f64>() - mu[0] * mu[1];
    assert!((c[(0, 1)] - cross).abs() < 1e-12 && c[(0, 1)] == c[(1, 0)]);
    // Exact samples: FD to the exact moments is only the fit's own noise, O(d^2 / n), and well
    // below sample-vs-sample FD, which carries the reference set's noise too.
    let x = from_mixture(&mix, &mix.weights, 40_000, 3);
    let y = from_mixture(&mix, &mix.weights, 40_000, 4);
    let got = evaluate(&x, &y, Some(&mix)).unwrap();
    let exact = got.fd_exact.unwrap();
    assert!(exact < 2e-3, "{got:?}");
    let (fit_mu, fit_c) = metrics::gaussian_fit(&x);
    assert_eq!(exact, metrics::fd_exact(&fit_mu, &fit_c, &mix));
    // Wrong weights: both FDs see it, by about the same amount.
    let off = from_mixture(&mix, &[0.25; 4], 40_000, 5);
    let bad = evaluate(&off, &y, Some(&mix)).unwrap();
    let ratio = bad.fd_exact.unwrap() / bad.fd;
    assert!(
        bad.fd_exact.unwrap() > 0.1 && (0.8..1.25).contains(&ratio),
        "{bad:?}"
    );
    // The streaming evaluation gives the same number.
    let streamed = metrics::evaluate_stream(&off, &y, Some(&mix)).unwrap();
    let s_exact = streamed.fd_exact.unwrap();
    assert!(
        (s_exact - bad.fd_exact.unwrap()).abs() < 1e-9 * s_exact,
        "{streamed:?}"
    );
}

#[test]
fn frechet_matches_the_two_by_two_closed_form_for_non_commuting_covariances() {
    // For 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), and C1^1/2 C2 C1^1/2 has the
    // trace and determinant of C1 C2.
    let c1 = DMatrix::<f64>::from_row_slice(2, 2, &[2.0, 0.7, 0.7, 1.0]);
    let c2 = DMatrix::<f64>::from_row_slice(2, 2, &[0.5, -0.2, -0.2, 3.0]);
    let (mu1, mu2) = ([1.0, -1.0], [0.0, 0.5]);
    let tr12 = (&c1 * &c2).trace();
    let det = c1.determinant() * c2.determinant();
    let exact = 1.0 + 2.25 + c1.trace() + c2.trace() - 2.0 * (tr12 + 2.0 * det.sqrt()).sqrt();
    let got = frechet(&mu1, &c1, &mu2, &c2);
    assert!((got - exact).abs() < 1e-12, "{got} vs {exact}");
}

#[test]
fn sw2_of_a_shifted_copy_is_the_shift_over_root_d() {
    // Every direction moves all projections by u.v, so W2^2 = (u.v)^2 exactly, and the
    // directions' orthonormal frames average (u.v)^2 to |v|^2 / d.
    // Exact for d = 64 and 2 up to the f32 rounding of the shifted copy; d = 3 has 85 frames
    // and one extra direction.
    for (d, tol) in [(64, 1e-6), (2, 1e-6), (3, 0.01)] {
        let x = correlate(&gaussian(500, &vec![0.0; d], &vec![1.0; d], 4), 5);
        let v: Vec<f32> = (0..d).map(|i| 0.5 + (i % 3) as f32 * 0.25).collect();
        let shifted = DataArray::new(
            x.values
                .iter()
                .enumerate()
                .map(|(i, a)| a + v[i % d])
                .collect(),
            x.shape.clone(),
        );
        let v2: f64 = v.iter().map(|a| f64::from(*a).powi(2)).sum();
        let exact = (v2 / d as f64).sqrt();
        let got = sw2(&x, &shifted).unwrap();
        assert!(
            (got - exact).abs() < tol * exact,
            "d = {d}: SW2 {got} vs |v|/sqrt(d) = {exact}"
        );
        assert!(sw2(&x, &x).unwrap() < 1e-12);
    }
}

#[test]
fn sw2_matches_quantiles_across_sample_counts() {
    // Every row twice is the same empirical distribution.
    let x = gaussian(700, &[0.0; 5], &[1.0, 2.0, 0.5, 1.0, 1.0], 6);
    let twice = DataArray::new([x.values.clone(), x.values.clone()].concat(), vec![1400, 5]);
    let same = sw2(&x, &twice).unwrap();
    assert!(same < 1e-12, "SW2 to a duplicated copy = {same}");
    // In 1-D, W2(N(0, 1), N(1, 2^2)) = sqrt(1 + (2 - 1)^2).
    let a = gaussian(20_000, &[0.0], &[1.0], 7);
    let b = gaussian(30_000, &[1.0], &[2.0], 8);
    let got = sw2(&a, &b).unwrap();
    assert!((got - 2f64.sqrt()).abs() < 0.05, "1-D W2 {got} vs sqrt 2");
}

#[test]
fn nll_matches_the_gaussian_entropy() {
    // E[-log N(x; mu, s^2 I)] = d/2 ln(2 pi s^2) + d/2; the sample mean has std sqrt(d / 2n).
    let (d, s, n) = (8, 0.5, 20_000);
    let mu: Vec<f64> = (0..d).map(|i| i as f64 * 0.3 - 1.0).collect();
    let single = Mixture::new(vec![1.0], mu.clone(), vec![s], d).unwrap();
    let x = gaussian(n, &mu, &vec![s; d], 9);
    let exact = 0.5 * d as f64 * (2.0 * std::f64::consts::PI * s * s).ln() + 0.5 * d as f64;
    let got = nll(&x, &single).unwrap();
    assert!((got - exact).abs() < 0.06, "NLL {got} vs {exact}");

    // Well-separated modes: NLL = H(w) + sum_k w_k (entropy of component k).
    let mix = four_modes();
    let x = from_mixture(&mix, &mix.weights, n, 10);
    let exact: f64 = mix
        .weights
        .iter()
        .zip(&mix.stds)
        .map(|(w, s)| -w * w.ln() + w * ((2.0 * std::f64::consts::PI * s * s).ln() + 1.0))
        .sum();
    let got = nll(&x, &mix).unwrap();
    assert!((got - exact).abs() < 0.04, "mixture NLL {got} vs {exact}");
}

#[test]
fn mode_kl_is_zero_with_the_true_weights_and_large_when_a_mode_is_dropped() {
    let mix = four_modes();
    let good = mode_kl(&from_mixture(&mix, &mix.weights, 20_000, 11), &mix).unwrap();
    // Sampling noise alone gives about (K - 1) / 2n.
    assert!((0.0..1e-3).contains(&good), "mode KL {good}");
    let dropped = mode_kl(&from_mixture(&mix, &[0.1, 0.2, 0.3, 0.0], 20_000, 12), &mix).unwrap();
    // q = (1/6, 1/3, 1/2, floor): 0.4 ln(0.4 / 1e-6) dominates.
    let expected = 0.1 * (0.1 * 6.0f64).ln()
        + 0.2 * (0.2 * 3.0f64).ln()
        + 0.3 * (0.3 * 2.0f64).ln()
        + 0.4 * (0.4 / metrics::MODE_FLOOR).ln();
    assert!(
        (dropped - expected).abs() < 0.02,
        "dropped mode: {dropped} vs {expected}"
    );
}

#[test]
fn evaluate_rejects_dimension_mismatches() {
    let mix = four_modes();
    let x2 = gaussian(10, &[0.0; 2], &[1.0; 2], 13);
    let x3 = gaussian(10, &[0.0; 3], &[1.0; 3], 14);
    let err = evaluate(&x3, &x2, None).unwrap_err().to_string();
    assert!(err.contains("dimension mismatch"), "{err}");
    let err = evaluate(&x3, &x3, Some(&mix)).unwrap_err().to_string();
    assert!(
        err.contains("dimension mismatch") && err.contains("mixture"),
        "{err}"
    );
    let m = evaluate(&x2, &x2, Some(&mix)).unwrap();
    assert!(m.nll.is_some() && m.mode_kl.is_some());
}

#[test]
fn eval_cli_prints_the_metrics_as_json_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, plain, samples) = (
        dir.path().join("ref.h5"),
        dir.path().join("plain.h5"),
        dir.path().join("samples.h5"),
    );
    let mix = four_modes();
    let ref_data = from_mixture(&mix, &mix.weights, 4000, 15);
    let set = BuiltSet {
        data: ref_data.clone(),
        labels: None,
        mixture: Some(mix.clone()),
    };
    write_set(&reference, &set, "test").unwrap();
    write_data(&plain, &ref_data, &vec![]).unwrap();
    let sample_data = from_mixture(&mix, &[0.25; 4], 3000, 16);
    write_data(&samples, &sample_data, &vec![]).unwrap();

    let eval = |args: &[&std::path::Path], json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fewstep"));
        cmd.arg("eval").arg(args[0]).arg("--reference").arg(args[1]);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = eval(&[&samples, &reference], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = evaluate(&sample_data, &ref_data, Some(&mix)).unwrap();
    // serde_json's default float parsing may be off in the last bit.
    let close = |key: &str, want: f64| {
        let got = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("`{key}` missing in {v}"));
        assert!(
            (got - want).abs() <= 1e-12 * want.abs(),
            "{key}: {got} vs {want}"
        );
    };
    close("fd", want.fd);
    close("fd_exact", want.fd_exact.unwrap());
    close("sw2", want.sw2);
    close("nll", want.nll.unwrap());
    close("mode_kl", want.mode_kl.unwrap());
    // Uniform instead of (0.1, 0.2, 0.3, 0.4) weights is a visible coverage error.
    assert!(want.mode_kl.unwrap() > 0.05, "{want:?}");

    let out = eval(&[&samples, &plain], true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["nll"].is_null() && v["mode_kl"].is_null() && v["fd_exact"].is_null(),
        "{v}"
    );
    assert!(v["fd"].as_f64().unwrap() > 0.0);

    let out = eval(&[&samples, &reference], false);
    let table = String::from_utf8(out.stdout).unwrap();
    for row in ["FD", "FD exact", "SW2", "NLL", "mode KL", "n = 3000, d = 2"] {
        assert!(table.contains(row), "table lacks {row}:\n{table}");
    }

    let missing = dir.path().join("nope.h5");
    let out = eval(&[&missing, &reference], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not exist"),
        "{err}"
    );
    let wide = dir.path().join("wide.h5");
    write_data(&wide, &gaussian(50, &[0.0; 3], &[1.0; 3], 17), &vec![]).unwrap();
    let out = eval(&[&wide, &reference], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("dimension mismatch"),
        "{err}"
    );
}

#[test]
fn fd_with_fewer_rows_than_dimensions_equals_the_full_form() {
    // 40-D sets of 30 and 25 rows (rank-deficient covariances) take the sample-space path.
    let d = 40;
    let mean: Vec<f64> = (0..d).map(|i| 0.1 * i as f64).collect();
    let a = correlate(&gaussian(30, &mean, &vec![1.0; d], 1), 2);
    let b = gaussian(25, &vec![0.0; d], &vec![0.5; d], 3);
    let low = fd(&a, &b).unwrap();
    let ((mu1, c1), (mu2, c2)) = (metrics::gaussian_fit(&a), metrics::gaussian_fit(&b));
    let full = frechet(&mu1, &c1, &mu2, &c2);
    assert!((low - full).abs() < 1e-8 * full.max(1.0), "{low} vs {full}");
    assert_eq!(low, metrics::frechet_low_rank(&a, &b));
    assert!(fd(&a, &a).unwrap() < 1e-8);
}
