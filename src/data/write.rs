//! Writing `/data` block by block as a chunked (optionally deflate-compressed) dataset, and
//! `/labels`: shared by the importers and the built-in image sets.

use super::h5::write_str_attr;
use anyhow::{bail, ensure, Result};
use hdf5::H5Type;

/// Target chunk size: big enough for fast sequential reads, small enough to shuffle by.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Rows per chunk for rows of `row_bytes` bytes, at most `n`.
pub fn chunk_rows(n: usize, row_bytes: usize) -> usize {
    (CHUNK_BYTES / row_bytes.max(1)).clamp(1, n.max(1))
}

/// Appends rows to a preallocated `/data` [N, row...] dataset.
pub struct RowWriter {
    ds: hdf5::Dataset,
    shape: Vec<usize>,
    written: usize,
}

impl RowWriter {
    /// Creates `/data` of element type `T` and shape `shape` = [N, row...], chunked along N,
    /// deflate-compressed at `compress` (0-9) when given.
    pub fn create<T: H5Type>(
        file: &hdf5::File,
        shape: &[usize],
        compress: Option<u8>,
    ) -> Result<Self> {
        ensure!(
            shape.len() >= 2 && shape[0] > 0,
            "nothing to write: shape {shape:?} has no rows"
        );
        let row_bytes = shape[1..].iter().product::<usize>() * std::mem::size_of::<T>();
        let mut chunk = shape.to_vec();
        chunk[0] = chunk_rows(shape[0], row_bytes);
        let mut b = file.new_dataset::<T>().chunk(chunk);
        if let Some(level) = compress {
            if level > 9 {
                bail!("--compress level {level} is out of range; deflate levels are 0-9");
            }
            if !hdf5::filters::deflate_available() {
                bail!(
                    "this HDF5 library has no deflate (zlib) filter; write uncompressed \
                     (leave out --compress) or install an HDF5 built with zlib"
                );
            }
            b = b.deflate(level);
        }
        let ds = b.shape(shape.to_vec()).create("data")?;
        Ok(RowWriter {
            ds,
            shape: shape.to_vec(),
            written: 0,
        })
    }

    /// Appends whole rows (row-major, `k * row_dim` values).
    pub fn write<T: H5Type>(&mut self, values: &[T]) -> Result<()> {
        let d: usize = self.shape[1..].iter().product();
        ensure!(
            values.len().is_multiple_of(d),
            "write of {} values is not whole rows of {d}",
            values.len()
        );
        let k = values.len() / d;
        ensure!(
            self.written + k <= self.shape[0],
            "writing past the {} rows of /data",
            self.shape[0]
        );
        if k == 0 {
            return Ok(());
        }
        let mut shape = self.shape.clone();
        shape[0] = k;
        let arr = ndarray::ArrayView::from_shape(ndarray::IxDyn(&shape), values)?;
        let mut sel = vec![hdf5::SliceOrIndex::from(self.written..self.written + k)];
        sel.extend((1..shape.len()).map(|_| hdf5::SliceOrIndex::from(..)));
        self.ds.write_slice(&arr, hdf5::Hyperslab::from(sel))?;
        self.written += k;
        Ok(())
    }

    pub fn written(&self) -> usize {
        self.written
    }

    /// Checks that every row was written and sets string attributes on `/data`.
    pub fn finish(self, attrs: &[(&str, String)]) -> Result<()> {
        ensure!(
            self.written == self.shape[0],
            "only {} of {} rows were written",
            self.written,
            self.shape[0]
        );
        for (k, v) in attrs {
            write_str_attr(&self.ds, k, v)?;
        }
        Ok(())
    }
}

/// Writes `/labels` [N] int64, with the class names (comma-separated) as attribute `classes`.
pub fn write_labels(file: &hdf5::File, labels: &[i64], classes: Option<&[String]>) -> Result<()> {
    let ds = file
        .new_dataset_builder()
        .with_data(labels)
        .create("labels")?;
    if let Some(c) = classes {
        write_str_attr(&ds, "classes", &c.join(","))?;
    }
    Ok(())
}
