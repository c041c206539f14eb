//! Whole-array HDF5 reads and writes of `/data` with string attributes.

use anyhow::{bail, Context, Result};
use hdf5::types::{TypeDescriptor, VarLenUnicode};
use std::path::Path;

/// String attributes stored on `/data` (e.g. steps, NFE, seed, the resolved config as TOML).
pub type Attrs = Vec<(String, String)>;

/// A dense float32 array with its shape (row-major; shape[0] = N).
#[derive(Clone, Debug, PartialEq)]
pub struct DataArray {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
}

impl DataArray {
    pub fn new(values: Vec<f32>, shape: Vec<usize>) -> Self {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "DataArray: values do not fill shape {shape:?}"
        );
        DataArray { values, shape }
    }
    /// Number of rows N.
    pub fn rows(&self) -> usize {
        self.shape[0]
    }
    /// Flattened size of one row.
    pub fn row_dim(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

/// Reads all of `/data` as float32 (uint8 scaled to [-1, 1]), refusing NaN or Inf.
pub fn read_data(path: &Path) -> Result<DataArray> {
    let file = hdf5::File::open(path)
        .with_context(|| format!("cannot open HDF5 file {}", path.display()))?;
    let ds = file.dataset("data").with_context(|| {
        format!("{} has no `/data` dataset: a fewstep dataset stores its samples there (see schemas/dataset.md)", path.display())
    })?;
    let shape = ds.shape();
    if shape.len() < 2 {
        bail!(
            "{}: `/data` has shape {:?}; expected [N, ...] with at least 2 dimensions",
            path.display(),
            shape
        );
    }
    let values: Vec<f32> = match ds.dtype()?.to_descriptor()? {
        TypeDescriptor::Float(_) => ds.read_raw::<f32>()?,
        TypeDescriptor::Unsigned(hdf5::types::IntSize::U1) => ds
            .read_raw::<u8>()?
            .into_iter()
            .map(|v| v as f32 / 127.5 - 1.0)
            .collect(),
        other => bail!(
            "{}: `/data` has dtype {other:?}; supported are float32/float64 and uint8 (images)",
            path.display()
        ),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: `/data` holds a non-finite value ({}) at flat index {i}; clean the file first",
            path.display(),
            values[i]
        );
    }
    Ok(DataArray { values, shape })
}

/// Writes `/data` (float32) with string attributes, replacing `path` atomically.
pub fn write_data(path: &Path, data: &DataArray, attrs: &Attrs) -> Result<()> {
    write_with(path, |file| {
        write_array(file, "data", data)?;
        let ds = file.dataset("data")?;
        for (k, v) in attrs {
            write_str_attr(&ds, k, v)?;
        }
        Ok(())
    })
}

/// Creates a new HDF5 file by running `fill` on it, atomically ([`crate::output`]): an existing
/// file is replaced only by a complete one, and a failed `fill` leaves it (and no temporary
/// file) behind.
pub fn write_with(path: &Path, fill: impl FnOnce(&hdf5::File) -> Result<()>) -> Result<()> {
    crate::output::write_path_with(path, |tmp| {
        let file =
            hdf5::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        fill(&file)?;
        file.flush()?;
        // Dropped (closed) here, before the file is synced and renamed.
        Ok(())
    })
}

/// Writes a float32 array as dataset `name` of `group`.
pub fn write_array(group: &hdf5::Group, name: &str, data: &DataArray) -> Result<()> {
    let arr = ndarray::ArrayView::from_shape(ndarray::IxDyn(&data.shape), &data.values)?;
    group.new_dataset_builder().with_data(&arr).create(name)?;
    Ok(())
}

/// Writes a float64 array as dataset `name` of `group`.
pub fn write_array_f64(
    group: &hdf5::Group,
    name: &str,
    values: &[f64],
    shape: &[usize],
) -> Result<()> {
    let arr = ndarray::ArrayView::from_shape(ndarray::IxDyn(shape), values)?;
    group.new_dataset_builder().with_data(&arr).create(name)?;
    Ok(())
}

/// Sets a string attribute.
pub fn write_str_attr(loc: &hdf5::Location, name: &str, value: &str) -> Result<()> {
    let v: VarLenUnicode = value
        .parse()
        .map_err(|e| anyhow::anyhow!("attribute {name}: {e:?}"))?;
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&v)?;
    Ok(())
}

/// Reads a string attribute, if present.
pub fn read_str_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    let a = loc.attr(name).ok()?;
    a.read_scalar::<VarLenUnicode>()
        .ok()
        .map(|s| s.as_str().to_string())
}
