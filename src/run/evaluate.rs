//! Scoring samples (`fewstep eval`, the reproductions): a reference set read once, then FD,
//! sliced W2 and, for mixtures, NLL and mode KL of any samples against it.

use crate::data::{read_data, DataArray, DataFile, Mixture};
use crate::dist::Collective;
use crate::metrics::{evaluate, evaluate_sharded, evaluate_stream, Metrics};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// A reference dataset and, when it has a `/mixture`, its exact parameters.
pub struct Reference {
    pub data: DataArray,
    pub mixture: Option<Mixture>,
}

impl Reference {
    /// Reads `/data` and `/mixture` (if any) of `path`.
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Reference {
            data: read_dataset(path, "reference")?,
            mixture: Mixture::read(path)?,
        })
    }

    /// The metrics of `samples` against this reference.
    pub fn score(&self, samples: &DataArray) -> Result<Metrics> {
        evaluate(samples, &self.data, self.mixture.as_ref())
    }

    /// The metrics of the samples in `samples` (`/data`), read a block of rows at a time: memory
    /// O(block) + O(d^2) + one SW2 pass's projections (see [`evaluate_stream`]).
    pub fn score_file(&self, samples: &DataFile) -> Result<Metrics> {
        evaluate_stream(samples, &self.data, self.mixture.as_ref())
    }

    /// [`Reference::score_file`] by every rank of `world`, each scoring its share of the rows
    /// (see [`evaluate_sharded`]): the metrics at rank 0, `None` elsewhere.
    pub fn score_file_on(
        &self,
        world: &dyn Collective,
        samples: &DataFile,
    ) -> Result<Option<Metrics>> {
        evaluate_sharded(world, samples, &self.data, self.mixture.as_ref())
    }
}

/// `/data` of `path` opened for reading a block at a time, or an error saying which input
/// (`what`) is missing or unreadable.
pub fn open_dataset(path: &Path, what: &str) -> Result<DataFile> {
    if !path.is_file() {
        bail!("{what} file {} does not exist", path.display());
    }
    DataFile::open(path).with_context(|| format!("cannot read the {what}"))
}

/// The `/data` of `path`, or an error saying which input (`what`) is missing or unreadable.
pub fn read_dataset(path: &Path, what: &str) -> Result<DataArray> {
    if !path.is_file() {
        bail!("{what} file {} does not exist", path.display());
    }
    read_data(path).with_context(|| format!("cannot read the {what}"))
}
