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
    let ds = open_data(path)?;
    let shape = ds.shape();
    let values = read_rows(&ds, 0..shape[0])?;
    Ok(DataArray { values, shape })
}

/// Opens `/data` of `path` with every check of the loader's opener ([`super::source::open`]:
/// `[N, ...]` with at least 2 dimensions, a size the file can hold, a supported dtype and
/// filters), so each command refuses a bad file with the same message.
pub fn open_data(path: &Path) -> Result<hdf5::Dataset> {
    // The file stays open while the dataset is (HDF5's default weak close).
    Ok(super::source::open(path)?.data)
}

/// Rows `rows` of a `/data` opened by [`open_data`] as float32 (uint8 scaled to [-1, 1]),
/// refusing NaN or Inf (flat indices in the error count from the file's first row).
pub fn read_rows(ds: &hdf5::Dataset, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
    let shape = ds.shape();
    let name = ds.filename();
    if rows.end > shape[0] {
        bail!(
            "{name}: `/data` has {} rows; rows {rows:?} were asked for",
            shape[0]
        );
    }
    let mut sel = vec![hdf5::SliceOrIndex::from(rows.clone())];
    sel.extend((1..shape.len()).map(|_| hdf5::SliceOrIndex::from(..)));
    let sel = hdf5::Hyperslab::from(sel);
    let values: Vec<f32> = match ds.dtype()?.to_descriptor()? {
        TypeDescriptor::Float(_) => {
            ds.read_slice::<f32, _, ndarray::IxDyn>(sel)?
                .into_raw_vec_and_offset()
                .0
        }
        TypeDescriptor::Unsigned(hdf5::types::IntSize::U1) => ds
            .read_slice::<u8, _, ndarray::IxDyn>(sel)?
            .into_iter()
            .map(|v| v as f32 / 127.5 - 1.0)
            .collect(),
        other => bail!(
            "{name}: `/data` has dtype {other:?}; supported are float32/float64 and uint8 (images)"
        ),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let row_dim: usize = shape[1..].iter().product();
        bail!(
            "{name}: `/data` holds a non-finite value ({}) at flat index {}; clean the file first",
            values[i],
            rows.start * row_dim + i
        );
    }
    Ok(values)
}

/// `/data` of a file, open for reading a block of rows at a time (memory O(block), not O(N)).
pub struct DataFile {
    ds: hdf5::Dataset,
    shape: Vec<usize>,
}

impl DataFile {
    /// Opens `/data` of `path` (see [`open_data`]).
    pub fn open(path: &Path) -> Result<Self> {
        let ds = open_data(path)?;
        let shape = ds.shape();
        Ok(DataFile { ds, shape })
    }
    /// Shape of `/data`, `[N, ...]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of rows N.
    pub fn rows(&self) -> usize {
        self.shape[0]
    }
    /// Flattened size of one row.
    pub fn row_dim(&self) -> usize {
        self.shape[1..].iter().product()
    }
    /// Rows `rows` as float32 (see [`read_rows`]).
    pub fn read(&self, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        read_rows(&self.ds, rows)
    }
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

/// Reads a string attribute: `Ok(None)` when there is none or it holds no string, an error
/// when the file cannot deliver it (a damaged file: the heap of a variable-length string, say).
pub fn read_str_attr(loc: &hdf5::Location, name: &str) -> Result<Option<String>> {
    let Ok(a) = loc.attr(name) else {
        return Ok(None);
    };
    let unreadable = || {
        format!(
            "{}: cannot read the attribute `{name}` of `{}`; the file is damaged",
            loc.filename(),
            loc.name()
        )
    };
    match a
        .dtype()
        .and_then(|t| t.to_descriptor())
        .with_context(unreadable)?
    {
        // Variable-length strings live in the file's global heap: a read failure there is damage.
        TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii => a
            .read_scalar::<VarLenUnicode>()
            .map(|s| Some(s.as_str().to_string()))
            .with_context(unreadable),
        // Fixed-length strings convert when HDF5 has a conversion path; other types hold none.
        _ => Ok(a
            .read_scalar::<VarLenUnicode>()
            .ok()
            .map(|s| s.as_str().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_shape_the_file_cannot_hold_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        // Chunked and never written: HDF5 creates it without allocating anything.
        let huge = dir.path().join("huge.h5");
        let f = hdf5::File::create(&huge).unwrap();
        f.new_dataset::<f32>()
            .chunk((1024, 2))
            .shape((1usize << 40, 2))
            .create("data")
            .unwrap();
        drop(f);
        let e = format!("{:#}", open_data(&huge).err().unwrap());
        assert!(
            e.contains("huge.h5") && e.contains("[1099511627776, 2]"),
            "{e}"
        );
        assert!(e.contains("more than its"), "{e}");

        // Deflate's best case, 4 MiB of zeros, is within the bound and reads.
        let zeros = dir.path().join("zeros.h5");
        let f = hdf5::File::create(&zeros).unwrap();
        let arr = ndarray::Array2::<f32>::zeros((1 << 19, 2));
        f.new_dataset_builder()
            .chunk((1 << 17, 2))
            .deflate(9)
            .with_data(&arr)
            .create("data")
            .unwrap();
        drop(f);
        let len = std::fs::metadata(&zeros).unwrap().len();
        assert!(len * 100 < 4 << 20, "compressed well: {len} bytes");
        assert_eq!(read_data(&zeros).unwrap().values.len(), 1 << 20);
    }
}
