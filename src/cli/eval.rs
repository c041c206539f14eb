//! `fewstep eval`: sample-quality metrics of a sample file against a reference dataset.

use crate::data::DataArray;
use crate::metrics::{Metrics, SW_DIRECTIONS};
use crate::run::evaluate::{open_dataset, Reference};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Samples to score (HDF5 with `/data`, e.g. written by `fewstep sample`).
    pub samples: PathBuf,
    /// Reference dataset (HDF5 with `/data`); its `/mixture`, if any, enables FD against the
    /// exact moments, NLL and mode KL.
    #[arg(long)]
    pub reference: PathBuf,
    /// Print one JSON object {"fd", "fd_exact", "sw2", "nll", "mode_kl"} (null where not
    /// available).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    // Under mpirun every rank scores its share of the rows; rank 0 prints the metrics.
    let world = crate::dist::world();
    let samples = open_dataset(&a.samples, "samples")?;
    let reference = Reference::read(&a.reference)?;
    let m = reference.score_file_on(world, &samples).with_context(|| {
        format!(
            "cannot compare {} with {}",
            a.samples.display(),
            a.reference.display()
        )
    })?;
    let Some(m) = m else {
        return Ok(());
    };
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        print!("{}", table(&a, samples.shape(), &reference.data, &m));
    }
    Ok(())
}

fn table(a: &Args, samples: &[usize], reference: &DataArray, m: &Metrics) -> String {
    // Six decimals, or three significant digits for small nonzero values (a good mode KL is ~1e-4).
    let num = |v: f64| {
        if v != 0.0 && v.abs() < 1e-3 {
            format!("{v:.3e}")
        } else {
            format!("{v:.6}")
        }
    };
    let opt = |v: Option<f64>| v.map_or("n/a".to_string(), num);
    let rows = [
        (
            "FD",
            num(m.fd),
            "Fréchet distance between Gaussian fits (FID on raw data; 0 = same mean and covariance)",
        ),
        (
            "FD exact",
            opt(m.fd_exact),
            "Fréchet distance to the mixture's exact mean and covariance (no reference-set noise)",
        ),
        (
            "SW2",
            num(m.sw2),
            "sliced Wasserstein-2 over fixed directions (data units; 0 = same distribution)",
        ),
        (
            "NLL",
            opt(m.nll),
            "mean exact negative log-likelihood under the reference mixture (nats per sample)",
        ),
        (
            "mode KL",
            opt(m.mode_kl),
            "KL(mixture weights || share of samples nearest each mode) (0 = modes hit in proportion)",
        ),
    ];
    let mut out = format!(
        "samples    {} (n = {}, d = {})\nreference  {} (n = {}, d = {})\n\n",
        a.samples.display(),
        samples[0],
        samples[1..].iter().product::<usize>(),
        a.reference.display(),
        reference.rows(),
        reference.row_dim()
    );
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (name, value, about) in rows {
        let about = if value == "n/a" {
            "(the reference has no /mixture)"
        } else {
            about
        };
        out += &format!("{name:<8} {value:>width$}  {about}\n");
    }
    out += &format!(
        "(SW2 uses {SW_DIRECTIONS} directions from a fixed seed: comparable across runs)\n"
    );
    out
}
