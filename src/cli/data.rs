//! `fewstep data ...`: make built-in sets, import, inspect.

use crate::data::builtin::{describe, make_set, row_bytes, write_builtin};
use crate::data::import::{import_arrays, import_png, Format, ImportOptions, Layout};
use crate::data::inspect;
use crate::limits::check_space;
use crate::output::check_target;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum DataCmd {
    /// Write a built-in dataset (mixtures with their exact parameters, or procedural images).
    Make(MakeArgs),
    /// Convert .npy/.npz arrays or a folder of PNG images to a fewstep HDF5 dataset.
    Import(ImportArgs),
    /// Show what a dataset file holds (shape, dtype, storage, value range, NaN/Inf, labels),
    /// optionally with a PNG grid of its first images.
    Inspect(InspectArgs),
}

#[derive(clap::Args, Debug)]
pub struct MakeArgs {
    /// Built-in set: two-modes, ring8, gmm64, shapes16, shapes32.
    pub name: String,
    /// Number of rows (samples) to draw.
    #[arg(long, default_value_t = 100_000, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub n: usize,
    /// Seed of the draw (the same seed gives the same set).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub seed: u64,
    /// Output HDF5 file: `/data`, plus `/mixture` (exact parameters) for mixture sets.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub force: super::Force,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Input format.
    #[arg(long, value_enum)]
    pub from: Format,
    /// Input files (npy, npz; concatenated in order) or one folder (png: images directly in it,
    /// or in one subfolder per class, which gives labels).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Row shape to store, e.g. 3,32,32 (C,H,W). Needed for flat image rows [N, C*H*W]; for png
    /// it picks the channels (1 grey, 3 RGB, 4 RGBA).
    #[arg(long, value_delimiter = ',')]
    pub shape: Option<Vec<usize>>,
    /// Pixel layout of the input rows: chw (channel-planar, e.g. the downsampled-ImageNet npz
    /// batches) or hwc (interleaved). Default: chw for flat rows, inferred from the shape of
    /// [N, H, W, C] / [N, C, H, W] arrays.
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Compress with deflate at this level (0-9; 4 when given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "4")]
    pub compress: Option<u8>,
    /// Output HDF5 file.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub force: super::Force,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Dataset file.
    pub file: PathBuf,
    /// Also write a PNG grid of the first images here.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Number of images in the grid.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub grid_n: usize,
    #[command(flatten)]
    pub force: super::Force,
}

pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Make(a) => make(a),
        DataCmd::Import(a) => import(a),
        DataCmd::Inspect(a) => inspect(a),
    }
}

fn make(a: MakeArgs) -> Result<()> {
    let Some(row_bytes) = row_bytes(&a.name) else {
        // make_set names the valid sets.
        return make_set(&a.name, 0, 0).map(drop);
    };
    if a.n == 0 {
        bail!("--n must be at least 1 (the number of rows to draw)");
    }
    check_target("--out", &a.out, a.force.force, &[])?;
    check_space(
        &a.out,
        &format!("{} with --n {}", a.name, a.n),
        a.n as u128 * row_bytes,
    )?;
    let source = format!("fewstep data make {} --n {} --seed {}", a.name, a.n, a.seed);
    let shape = write_builtin(&a.out, &a.name, a.n, a.seed, &source)?;
    eprintln!(
        "wrote {} ({}): /data {shape:?} to {}",
        a.name,
        describe(&a.name),
        a.out.display()
    );
    Ok(())
}

fn import(a: ImportArgs) -> Result<()> {
    let inputs: Vec<(&str, &std::path::Path)> =
        a.inputs.iter().map(|i| ("input", i.as_path())).collect();
    check_target("--out", &a.out, a.force.force, &inputs)?;
    let mut source = format!("fewstep data import --from {:?}", a.from).to_lowercase();
    for i in &a.inputs {
        source.push(' ');
        source.push_str(&i.display().to_string());
    }
    let opts = ImportOptions {
        shape: a.shape,
        layout: a.layout,
        compress: a.compress,
        source,
    };
    let s = match a.from {
        Format::Png => {
            if a.inputs.len() != 1 || !a.inputs[0].is_dir() {
                bail!("--from png takes one folder of .png images");
            }
            import_png(&a.inputs[0], &a.out, &opts)?
        }
        f => import_arrays(f, &a.inputs, &a.out, &opts)?,
    };
    eprintln!(
        "wrote /data {:?} {}{}{} to {}",
        s.shape,
        s.elem.name(),
        if s.transposed {
            " (transposed from H,W,C)"
        } else {
            ""
        },
        if s.labels { " with /labels" } else { "" },
        a.out.display()
    );
    if s.non_finite > 0 {
        eprintln!(
            "warning: {} NaN/Inf values; the loader will refuse batches holding them",
            s.non_finite
        );
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    if let Some(grid) = &a.grid {
        check_target(
            "--grid",
            grid,
            a.force.force,
            &[("dataset", a.file.as_path())],
        )?;
        if a.grid_n == 0 {
            bail!("--grid-n must be at least 1 (the number of images in the grid)");
        }
    }
    print!("{}", inspect::inspect(&a.file)?);
    if let Some(out) = &a.grid {
        let k = inspect::write_grid(&a.file, out, a.grid_n)?;
        println!("grid:        {k} images to {}", out.display());
    }
    Ok(())
}
