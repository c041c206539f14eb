//! `fewstep reproduce ...`: the paper's comparisons at a scale this hardware affords, printed in
//! the paper's layout with a CSV and plots.

pub mod distill;
pub mod figure1;
pub mod samplers;

use crate::data::builtin::{make_set, write_set};
use anyhow::{bail, Context, Result};
use distill::Presets;
use std::path::Path;

/// Built-in presets per reproduction.
pub const TABLE2: Presets = &[
    (
        "quick",
        include_str!("../../configs/reproduce/table2-quick.toml"),
    ),
    (
        "hour",
        include_str!("../../configs/reproduce/table2-hour.toml"),
    ),
];
pub const TABLE3: Presets = &[
    (
        "quick",
        include_str!("../../configs/reproduce/table3-quick.toml"),
    ),
    (
        "hour",
        include_str!("../../configs/reproduce/table3-hour.toml"),
    ),
    (
        "paper",
        include_str!("../../configs/reproduce/table3-paper.toml"),
    ),
];
pub const TABLE4: Presets = &[
    (
        "quick",
        include_str!("../../configs/reproduce/table4-quick.toml"),
    ),
    (
        "hour",
        include_str!("../../configs/reproduce/table4-hour.toml"),
    ),
    (
        "paper",
        include_str!("../../configs/reproduce/table4-paper.toml"),
    ),
    (
        "gpu",
        include_str!("../../configs/reproduce/table4-gpu.toml"),
    ),
];
pub const FIGURE1: Presets = &[(
    "quick",
    include_str!("../../configs/reproduce/figure1-quick.toml"),
)];

/// The TOML of preset `preset` among `presets` for `reproduce what`, or an error listing the
/// valid ones.
pub fn preset_text(
    what: &str,
    presets: &[(&str, &'static str)],
    preset: &str,
) -> Result<&'static str> {
    match presets.iter().find(|(n, _)| *n == preset) {
        Some((_, text)) => Ok(text),
        None => bail!(
            "unknown preset `{preset}` for `reproduce {what}`; valid presets: {}",
            presets.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Makes built-in set `name` with `n` rows from `seed` at `path`, or reuses the file there when
/// it has `n` rows (a different size is refused rather than overwritten).
pub fn builtin_set(path: &Path, name: &str, n: usize, seed: u64) -> Result<()> {
    if path.exists() {
        let rows = crate::data::read_data(path)?.rows();
        if rows != n {
            bail!(
                "{} holds {rows} rows, the preset asks for {n}: remove it or pick another --out",
                path.display()
            );
        }
        return Ok(());
    }
    let set = make_set(name, n, seed)?;
    write_set(
        path,
        &set,
        &format!("fewstep reproduce ({name}, seed {seed})"),
    )
}

/// Writes `text` to `dir/name` atomically (creating `dir`).
pub fn write_text(dir: &Path, name: &str, text: &str) -> Result<()> {
    crate::output::write_bytes(&dir.join(name), text.as_bytes())
}

/// Writes `rows` to `dir/name` as CSV atomically: a header from the row type's field names, then
/// one record per row, fields quoted where they hold commas, quotes or line breaks; `None` is
/// an empty field.
pub fn write_csv<T: serde::Serialize>(dir: &Path, name: &str, rows: &[T]) -> Result<()> {
    let path = dir.join(name);
    crate::output::write_with(&path, |f| {
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(f));
        for row in rows {
            w.serialize(row)?;
        }
        w.flush()?;
        Ok(())
    })
    .with_context(|| format!("cannot write {}", path.display()))
}
