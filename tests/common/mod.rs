//! Shared test helpers: a closed-form denoiser for Gaussian data, small tensor utilities, and
//! running the `fewstep` binary.
#![allow(dead_code)]

use anyhow::Result;
use dfdx::shapes::HasShape;
use dfdx::tensor::TensorFromVec;
use fewstep::config::plugin_from_toml;
use fewstep::denoiser::{Denoiser, Level};
use fewstep::integrator::Integrator;
use fewstep::schedule::Schedule;
use fewstep::tensor::{batch_from_vec, Batch, Coef, Dev, Rows};

/// Data x ~ N(mean, std^2 I): with z = alpha x + sigma eps, E[x|z] = mean + g (z - alpha mean),
/// g = alpha std^2 / (alpha^2 std^2 + sigma^2), and Var[x|z] = std^2 sigma^2 / (alpha^2 std^2 +
/// sigma^2) in every coordinate. Computed on the host in f64.
pub struct Gaussian {
    pub dev: Dev,
    pub mean: Vec<f64>,
    pub std: f64,
}

impl Gaussian {
    /// (g, Var[x|z]) at (alpha, sigma).
    pub fn gain_var(&self, alpha: f64, sigma: f64) -> (f64, f64) {
        let v = self.std * self.std;
        let denom = alpha * alpha * v + sigma * sigma;
        (alpha * v / denom, v * sigma * sigma / denom)
    }

    /// Where the probability-flow ODE takes z_t to at time s: the standardised
    /// (z - alpha m) / sqrt(alpha^2 std^2 + sigma^2) is constant along it.
    pub fn flow(&self, schedule: &dyn Schedule, z_t: &[f32], t: f64, s: f64) -> Vec<f64> {
        let ((at, st), (as_, ss)) = (schedule.alpha_sigma(t), schedule.alpha_sigma(s));
        let v = self.std * self.std;
        let ratio = (as_ * as_ * v + ss * ss).sqrt() / (at * at * v + st * st).sqrt();
        let d = self.mean.len();
        z_t.iter()
            .enumerate()
            .map(|(i, &z)| {
                let m = self.mean[i % d];
                as_ * m + ratio * (f64::from(z) - at * m)
            })
            .collect()
    }
}

/// A denoiser linear in z, as every one is for Gaussian data: x_hat = m + g (z - alpha m) per
/// entry, the gain g = `gain(alpha, sigma)` of each row's noise level.
pub fn linear_denoise(
    dev: &Dev,
    z: &Batch,
    level: &Level,
    mean: &[f64],
    gain: impl Fn(f64, f64) -> f64,
) -> Batch {
    let (n, d) = *z.shape();
    let (a, s) = (per_row(&level.alpha, n), per_row(&level.sigma, n));
    let g: Vec<f64> = (0..n).map(|i| gain(a[i], s[i])).collect();
    let zv = z.as_vec();
    let out = (0..n * d)
        .map(|k| {
            let (i, m) = (k / d, mean[k % mean.len()]);
            (m + g[i] * (f64::from(zv[k]) - a[i] * m)) as f32
        })
        .collect();
    batch_from_vec(dev, out, n, d)
}

/// A coefficient as one f64 per row.
pub fn per_row(c: &Coef, rows: usize) -> Vec<f64> {
    c.host_rows(rows)
}

impl Denoiser for Gaussian {
    fn dim(&self) -> usize {
        self.mean.len()
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        Ok(linear_denoise(&self.dev, z, level, &self.mean, |a, s| {
            self.gain_var(a, s).0
        }))
    }

    fn posterior_variance(&self, z: &Batch, level: &Level) -> Option<Result<Rows>> {
        let n = z.shape().0;
        let (a, s) = (per_row(&level.alpha, n), per_row(&level.sigma, n));
        let v: Vec<f32> = (0..n).map(|i| self.gain_var(a[i], s[i]).1 as f32).collect();
        Some(Ok(self.dev.tensor_from_vec(v, (n,))))
    }
}

pub fn schedule(toml: &str) -> Box<dyn Schedule> {
    plugin_from_toml(toml).unwrap_or_else(|e| panic!("{toml}: {e}"))
}

pub fn integrator(toml: &str) -> Box<dyn Integrator> {
    plugin_from_toml(toml).unwrap_or_else(|e| panic!("{toml}: {e}"))
}

/// Largest |a - b| over all entries.
pub fn max_diff(a: &Batch, b: &Batch) -> f64 {
    a.as_vec()
        .iter()
        .zip(b.as_vec())
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

/// Row `i` of a batch as a one-row batch.
pub fn row(dev: &Dev, b: &Batch, i: usize) -> Batch {
    let d = b.shape().1;
    batch_from_vec(dev, b.as_vec()[i * d..(i + 1) * d].to_vec(), 1, d)
}

/// Runs the `fewstep` binary.
pub fn fewstep(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args(args)
        .output()
        .expect("run fewstep")
}

/// Stdout and stderr of a `fewstep` run that must succeed.
pub fn ok_logged(args: &[&str]) -> (String, String) {
    let o = fewstep(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "fewstep {args:?} failed: {err}");
    (String::from_utf8(o.stdout).unwrap(), err)
}

/// Stdout of a `fewstep` run that must succeed.
pub fn ok(args: &[&str]) -> String {
    ok_logged(args).0
}

/// Stderr of a `fewstep` run that must fail.
pub fn err(args: &[&str]) -> String {
    let o = fewstep(args);
    assert!(!o.status.success(), "fewstep {args:?} should fail");
    String::from_utf8(o.stderr).unwrap()
}

pub fn p(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

/// One bad input or fault, run as a user would: `fewstep args` in `dir` must fail with a clear,
/// one-line error. Tables of these make the bad-input suites (tests/bad_input_*.rs).
pub struct BadCase<'a> {
    /// What the case is, for the failure message.
    pub what: &'a str,
    pub args: Vec<String>,
    /// Every one of these must appear in stderr (the field, file or valid choices).
    pub names: Vec<&'a str>,
}

/// Runs a [`BadCase`] in `dir` and checks what the suites promise: an exit code of 1 or 2 (never
/// a panic's 101 or a signal), the error's first line names what it must, no panic text, every
/// file already in `dir` unchanged byte for byte, and no file left behind (temporary or not).
pub fn check_bad_case(dir: &std::path::Path, case: &BadCase) {
    let before = snapshot(dir);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args(&case.args)
        .current_dir(dir)
        .output()
        .expect("run fewstep");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let what = case.what;
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "{what}: `fewstep {}` exit {:?} (want 1 or 2): {stderr}",
        case.args.join(" "),
        o.status
    );
    assert!(!stderr.contains("panicked"), "{what}: panic: {stderr}");
    for name in &case.names {
        assert!(
            stderr.contains(name),
            "{what}: error does not name {name:?}: {stderr}"
        );
    }
    assert_eq!(
        snapshot(dir),
        before,
        "{what}: files in {dir:?} changed or were left behind"
    );
}

/// Every file under `dir` (recursively, hidden ones too) with its bytes.
pub fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// An `.npy` file's bytes (format 1.0).
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}
