//! A whole dataset in memory (rows, labels, the mixture behind it) and how it is written.

use super::h5::{write_array, write_str_attr, write_with, DataArray};
use super::Mixture;
use anyhow::Result;
use std::path::Path;

/// A generated dataset: rows, optional labels, optional mixture parameters.
pub struct BuiltSet {
    pub data: DataArray,
    pub labels: Option<Vec<i64>>,
    pub mixture: Option<Mixture>,
}

/// Writes a built set to `path` (atomically): `/data`, `/labels`, `/mixture`, a `source` attribute.
pub fn write_set(path: &Path, set: &BuiltSet, source: &str) -> Result<()> {
    write_with(path, |file| {
        write_array(file, "data", &set.data)?;
        let ds = file.dataset("data")?;
        write_str_attr(&ds, "source", source)?;
        if let Some(labels) = &set.labels {
            file.new_dataset_builder()
                .with_data(labels.as_slice())
                .create("labels")?;
        }
        if let Some(m) = &set.mixture {
            m.write(file)?;
        }
        Ok(())
    })
}
