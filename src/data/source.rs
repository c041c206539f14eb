//! The `/data` and `/labels` datasets of a file: validation with errors that say how to fix the
//! file, and reads of row ranges in the stored element type.

use anyhow::{bail, Context, Result};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use std::path::{Path, PathBuf};

/// Element types `/data` may be stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// Images: 0..=255 read as `v / 127.5 - 1`, i.e. [-1, 1].
    U8,
    F32,
    /// Read as float32.
    F64,
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::U8 => 1,
            Elem::F32 => 4,
            Elem::F64 => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Elem::U8 => "uint8",
            Elem::F32 => "float32",
            Elem::F64 => "float64",
        }
    }
}

/// What `/data` looks like, read from the file's metadata (no values).
#[derive(Clone, Debug)]
pub struct DataInfo {
    pub path: PathBuf,
    /// `[N, row...]`.
    pub shape: Vec<usize>,
    pub elem: Elem,
    /// Chunk shape, `None` when stored contiguously.
    pub chunk: Option<Vec<usize>>,
    /// Filter pipeline, e.g. `["deflate(4)"]`.
    pub filters: Vec<String>,
}

impl DataInfo {
    pub fn rows(&self) -> usize {
        self.shape[0]
    }
    pub fn row_shape(&self) -> &[usize] {
        &self.shape[1..]
    }
    pub fn row_dim(&self) -> usize {
        self.shape[1..].iter().product()
    }
    /// Bytes of `/data` as stored, uncompressed.
    pub fn bytes(&self) -> u64 {
        (self.rows() * self.row_dim() * self.elem.size()) as u64
    }
    /// Rows per chunk along N (1 row per read when contiguous).
    pub fn chunk_rows(&self) -> Option<usize> {
        self.chunk.as_ref().map(|c| c[0].max(1))
    }
}

/// An open file with its validated `/data` dataset.
pub struct DataFile {
    pub file: hdf5::File,
    pub data: hdf5::Dataset,
    pub info: DataInfo,
}

/// Opens `path` and checks that `/data` exists, has rank >= 2 and a supported dtype.
pub fn open(path: &Path) -> Result<DataFile> {
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    let file = hdf5::File::open(path).with_context(|| {
        format!(
            "cannot open {} as HDF5; fewstep datasets are HDF5 files (see schemas/dataset.md), \
             `fewstep data import` converts npy/npz/png",
            path.display()
        )
    })?;
    let data = file.dataset("data").map_err(|_| {
        let members = file.member_names().unwrap_or_default();
        anyhow::anyhow!(
            "{} has no `/data` dataset (it holds: {}); store the samples as `/data` [N, ...] \
             (see schemas/dataset.md) or convert with `fewstep data import`",
            path.display(),
            if members.is_empty() {
                "nothing".to_string()
            } else {
                members
                    .iter()
                    .map(|m| format!("/{m}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    })?;
    let shape = data.shape();
    if shape.len() < 2 {
        bail!(
            "{}: `/data` has shape {shape:?}; it must be [N, ...] with one row per sample \
             (e.g. [N, D] or [N, C, H, W]); reshape a 1-D array to [N, 1]",
            path.display()
        );
    }
    let elem = elem_of(&data).with_context(|| format!("{}: `/data`", path.display()))?;
    let elem = match elem {
        Some(e) => e,
        None => bail!(
            "{}: `/data` has dtype {}; supported are float32, float64 and uint8 (images): \
             convert it, e.g. with numpy `.astype(np.float32)`",
            path.display(),
            dtype_name(&data)
        ),
    };
    let chunk = data.chunk();
    let filters = data.filters().iter().map(|f| format!("{f:?}")).collect();
    Ok(DataFile {
        file,
        data,
        info: DataInfo {
            path: path.to_path_buf(),
            shape,
            elem,
            chunk,
            filters,
        },
    })
}

fn elem_of(ds: &hdf5::Dataset) -> Result<Option<Elem>> {
    Ok(match ds.dtype()?.to_descriptor()? {
        TypeDescriptor::Unsigned(IntSize::U1) => Some(Elem::U8),
        TypeDescriptor::Float(FloatSize::U4) => Some(Elem::F32),
        TypeDescriptor::Float(FloatSize::U8) => Some(Elem::F64),
        _ => None,
    })
}

/// A readable dtype name for error messages.
pub fn dtype_name(ds: &hdf5::Dataset) -> String {
    match ds.dtype().and_then(|t| t.to_descriptor()) {
        Ok(TypeDescriptor::Integer(s)) => format!("int{}", s as usize * 8),
        Ok(TypeDescriptor::Unsigned(s)) => format!("uint{}", s as usize * 8),
        Ok(TypeDescriptor::Float(s)) => format!("float{}", s as usize * 8),
        Ok(other) => format!("{other}"),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Reads `/labels` when present: it must be 1-D, integer and hold one label per row.
pub fn read_labels(df: &DataFile) -> Result<Option<Vec<i64>>> {
    let path = df.info.path.display();
    let Ok(ds) = df.file.dataset("labels") else {
        return Ok(None);
    };
    let shape = ds.shape();
    if shape.len() != 1 || shape[0] != df.info.rows() {
        bail!(
            "{path}: `/labels` has shape {shape:?} but `/data` has {} rows; store one integer \
             label per row as `/labels` [N], or delete `/labels`",
            df.info.rows()
        );
    }
    match ds.dtype()?.to_descriptor()? {
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {}
        _ => bail!(
            "{path}: `/labels` has dtype {}; labels must be integers (e.g. int64)",
            dtype_name(&ds)
        ),
    }
    Ok(Some(
        ds.read_raw::<i64>()
            .with_context(|| format!("{path}: reading `/labels`"))?,
    ))
}

/// Rows of `/data` in the stored element type.
#[derive(Clone, Debug)]
pub enum Raw {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Raw {
    /// Reads rows `start..end` with one contiguous hyperslab read.
    pub fn read(df: &DataFile, start: usize, end: usize) -> Result<Raw> {
        let mut sel = vec![hdf5::SliceOrIndex::from(start..end)];
        sel.extend((1..df.info.shape.len()).map(|_| hdf5::SliceOrIndex::from(..)));
        let sel = hdf5::Hyperslab::from(sel);
        let reader = df.data.as_reader();
        let raw = match df.info.elem {
            Elem::U8 => Raw::U8(
                reader
                    .read_slice::<u8, _, ndarray::IxDyn>(sel)?
                    .into_raw_vec_and_offset()
                    .0,
            ),
            Elem::F32 => Raw::F32(
                reader
                    .read_slice::<f32, _, ndarray::IxDyn>(sel)?
                    .into_raw_vec_and_offset()
                    .0,
            ),
            Elem::F64 => Raw::F64(
                reader
                    .read_slice::<f64, _, ndarray::IxDyn>(sel)?
                    .into_raw_vec_and_offset()
                    .0,
            ),
        };
        Ok(raw)
    }

    /// Appends row `row` (of `d` elements) as float32 to `out`; returns the offset within the row
    /// and the value of its first non-finite element, if any.
    #[inline]
    pub fn push_row(&self, row: usize, d: usize, out: &mut Vec<f32>) -> Option<(usize, f64)> {
        let r = row * d..(row + 1) * d;
        match self {
            Raw::U8(v) => {
                out.extend(v[r].iter().map(|&x| u8_to_f32(x)));
                None
            }
            Raw::F32(v) => {
                let s = &v[r];
                out.extend_from_slice(s);
                first_bad(s)
            }
            Raw::F64(v) => {
                let s = &v[r];
                out.extend(s.iter().map(|&x| x as f32));
                first_bad(s)
            }
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Raw::U8(v) => v.len(),
            Raw::F32(v) => v.len(),
            Raw::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The uint8 -> [-1, 1] scaling, the same as [`super::h5::read_data`].
#[inline(always)]
pub fn u8_to_f32(x: u8) -> f32 {
    x as f32 / 127.5 - 1.0
}

fn first_bad<T: Copy + Into<f64>>(s: &[T]) -> Option<(usize, f64)> {
    s.iter()
        .position(|&x| !x.into().is_finite())
        .map(|i| (i, s[i].into()))
}
