//! The `midpoint` integrator of docs/writing-a-plugin.md: second-order convergence to the exact
//! probability-flow ODE of Gaussian data (the `gmm` denoiser with one component), use from the
//! CLI, and the doc quoting this crate's source verbatim.

use fewstep::config::plugin_from_toml;
use fewstep::data::Mixture;
use fewstep::integrator::{Integrator, RowNoise};
use fewstep::plugins::gmm::GmmDenoiser;
use fewstep::sampling::sample;
use fewstep::schedule::Schedule;
use fewstep::tensor::{normal, seeded_device};
// Links this crate's plugins into the test binary, so `name = "midpoint"` resolves.
use fewstep_tract as _;
use std::path::Path;
use std::process::Command;

const MEAN: [f64; 2] = [1.0, -0.5];
const STD: f64 = 0.5;

fn plugin<T: serde::de::DeserializeOwned>(toml: &str) -> T {
    plugin_from_toml(toml).unwrap()
}

/// Where the ODE takes z_t at time s: (z - alpha m) / sqrt(alpha^2 STD^2 + sigma^2) is constant.
fn exact_flow(sch: &dyn Schedule, z_t: &[f32], t: f64, s: f64) -> Vec<f64> {
    let ((at, st), (as_, ss)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
    let v = STD * STD;
    let ratio = ((as_ * as_ * v + ss * ss) / (at * at * v + st * st)).sqrt();
    z_t.iter()
        .enumerate()
        .map(|(i, &z)| {
            let m = MEAN[i % 2];
            as_ * m + ratio * (f64::from(z) - at * m)
        })
        .collect()
}

/// Max error and NFE of `steps` uniform steps from t = 0.9 to 0.1 (away from the endpoints,
/// where the ODE in t is singular and every integrator's order drops).
fn error(integrator: &dyn Integrator, steps: usize) -> (f64, usize) {
    let dev = seeded_device(0);
    let sch: Box<dyn Schedule> = plugin("name = \"cosine\"");
    let mixture = Mixture::new(vec![1.0], MEAN.to_vec(), vec![STD], 2).unwrap();
    let gmm = GmmDenoiser::new(&dev, &mixture);
    let (t0, t1) = (0.9, 0.1);
    let grid: Vec<f64> = (0..=steps)
        .map(|i| t0 + (t1 - t0) * i as f64 / steps as f64)
        .collect();
    let z = normal(&dev, 256, 2);
    let want = exact_flow(sch.as_ref(), &z.as_vec(), t0, t1);
    let out = sample(
        &dev,
        sch.as_ref(),
        integrator,
        &gmm,
        z,
        &grid,
        RowNoise::default(),
    )
    .unwrap();
    let err = out
        .samples
        .as_vec()
        .iter()
        .zip(&want)
        .map(|(&g, w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max);
    (err, out.nfe)
}

#[test]
fn midpoint_converges_at_second_order_to_the_exact_flow() {
    let ddim: Box<dyn Integrator> = plugin("name = \"ddim\"");
    for r in ["0.5", "0.6667", "1.0"] {
        let midpoint: Box<dyn Integrator> = plugin(&format!("name = \"midpoint\"\nr = {r}"));
        let mut last = (f64::NAN, f64::NAN);
        for steps in [8, 16, 32] {
            let (err, nfe) = error(midpoint.as_ref(), steps);
            let (ddim_err, _) = error(ddim.as_ref(), steps);
            println!(
                "r = {r}, {steps} steps: midpoint error {err:.2e} ({:.1}x less than at half the \
                 steps), DDIM {ddim_err:.2e} ({:.1}x)",
                last.0 / err,
                last.1 / ddim_err
            );
            assert_eq!(nfe, 2 * steps);
            assert!(err < ddim_err / 2.0, "{err} vs DDIM {ddim_err}");
            if steps > 8 {
                // Halving h divides a second-order error by ~4, DDIM's first-order one by ~2.
                assert!(last.0 / err > 3.3, "r = {r}: {} -> {err}", last.0);
                assert!(
                    (1.7..2.3).contains(&(last.1 / ddim_err)),
                    "DDIM: {} -> {ddim_err}",
                    last.1
                );
            }
            last = (err, ddim_err);
        }
    }
}

#[test]
fn settings_are_checked() {
    let default: Box<dyn Integrator> = plugin("name = \"midpoint\"");
    assert_eq!(format!("{default:?}"), "Midpoint { r: 0.5 }");
    let unknown: anyhow::Result<Box<dyn Integrator>> =
        plugin_from_toml("name = \"midpoint\"\nfraction = 0.5");
    assert!(unknown.is_err());
    for r in ["0.0", "1.5"] {
        let bad: Box<dyn Integrator> = plugin(&format!("name = \"midpoint\"\nr = {r}"));
        let err = format!("{:#}", error_of(bad.as_ref()));
        assert!(err.contains("r must lie in (0, 1]"), "{err}");
    }
}

fn error_of(integrator: &dyn Integrator) -> anyhow::Error {
    let dev = seeded_device(0);
    let sch: Box<dyn Schedule> = plugin("name = \"cosine\"");
    let mixture = Mixture::new(vec![1.0], MEAN.to_vec(), vec![STD], 2).unwrap();
    let gmm = GmmDenoiser::new(&dev, &mixture);
    let z = normal(&dev, 4, 2);
    let grid = [1.0, 0.0];
    match sample(
        &dev,
        sch.as_ref(),
        integrator,
        &gmm,
        z,
        &grid,
        RowNoise::default(),
    ) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn samples_from_the_cli_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fewstep-tract"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {err}");
        err
    };
    run(&["data", "make", "ring8", "--n", "100", "--out", "ring8.h5"]);
    let err = run(&[
        "sample",
        "--data",
        "ring8.h5",
        "--integrator",
        "midpoint",
        "--steps",
        "4",
        "--n",
        "100",
    ]);
    assert!(err.contains("(8 NFE each)"), "{err}");
}

#[test]
fn the_plugin_guide_quotes_this_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("../../docs/writing-a-plugin.md")).unwrap();
    let source = include_str!("../src/midpoint.rs");
    assert!(
        guide.contains(&format!("```rust\n{source}```")),
        "docs/writing-a-plugin.md must quote examples/tract/src/midpoint.rs whole, in a ```rust \
         block: update the one to match the other"
    );
}
