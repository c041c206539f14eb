//! The `/data` and `/labels` datasets of a file: validation with errors that say how to fix the
//! file, and reads of row ranges in the stored element type.

use anyhow::{bail, Context, Result};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use std::path::{Path, PathBuf};

/// How many times larger than its file the data a file describes can be: deflate, the strongest
/// compressing filter of the HDF5 fewstep links, shrinks a chunk at most about 1032:1.
pub const MAX_EXPANSION: u64 = 1032;

/// The bytes dataset `ds` declares (its shape times its element size), checked against what its
/// file can hold. The shape is read from the file and sizes buffers before a value is read, so a
/// damaged shape must end in an error here, not in an allocation of terabytes.
pub fn check_declared_size(ds: &hdf5::Dataset) -> Result<u64> {
    let file = ds.filename();
    let shape = ds.shape();
    let elem = ds
        .dtype()
        .with_context(|| format!("{file}: `{}` has an unreadable type", ds.name()))?
        .size();
    let file_len = std::fs::metadata(&file).map_or(u64::MAX, |m| m.len());
    let bytes = shape
        .iter()
        .try_fold(elem as u64, |n, &d| n.checked_mul(d as u64));
    match bytes {
        Some(b) if b <= file_len.saturating_mul(MAX_EXPANSION) => Ok(b),
        _ => bail!(
            "{file}: `{}` declares shape {shape:?} of {elem}-byte values, more than its \
             {file_len}-byte file can hold even compressed ({MAX_EXPANSION}:1): the file is \
             damaged, or the dataset was never written",
            ds.name()
        ),
    }
}

/// Refuses compression this build cannot decode, naming it, before a read fails inside HDF5
/// (whose message is about a plugin folder): the built-in filters are deflate (gzip), shuffle,
/// Fletcher-32, n-bit and scale-offset; plugins such as h5py's lzf, blosc, lz4, bitshuffle or
/// zstd, and szip (not in this HDF5 build), are not.
pub fn check_filters(path: &Path, data: &hdf5::Dataset) -> Result<()> {
    use hdf5::filters::Filter;
    for f in &data.filters() {
        let name = match f {
            Filter::Deflate(_)
            | Filter::Shuffle
            | Filter::Fletcher32
            | Filter::NBit
            | Filter::ScaleOffset(_) => continue,
            Filter::SZip(..) => "szip".to_string(),
            Filter::User(id, _) => match id {
                32000 => "lzf (h5py's, filter 32000)".to_string(),
                32001 => "blosc (filter 32001)".to_string(),
                32004 => "lz4 (filter 32004)".to_string(),
                32008 => "bitshuffle (filter 32008)".to_string(),
                32015 => "zstd (filter 32015)".to_string(),
                id => format!("HDF5 filter {id}"),
            },
        };
        bail!(
            "{}: `/data` is compressed with {name}, which fewstep's HDF5 cannot decode; \
             supported: gzip (deflate), shuffle, fletcher32, n-bit, scale-offset. Rewrite it, \
             e.g. with h5py `compression=\"gzip\"`, or save it as .npy for `fewstep data import`",
            path.display()
        );
    }
    Ok(())
}

/// Element types `/data` may be stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// Images: 0..=255 read as `v / 127.5 - 1`, i.e. [-1, 1].
    U8,
    F32,
    /// Read as float32.
    F64,
    /// IEEE half precision: only `fewstep data inspect` reads it ([`open_any`]); the loader and
    /// every other command refuse it ([`open`]).
    F16,
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::U8 => 1,
            Elem::F32 => 4,
            Elem::F64 => 8,
            Elem::F16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Elem::U8 => "uint8",
            Elem::F32 => "float32",
            Elem::F64 => "float64",
            Elem::F16 => "float16",
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
    /// Bytes of one row as stored.
    pub fn row_bytes(&self) -> usize {
        self.row_dim() * self.elem.size()
    }
    /// Bytes of `/data` as stored, uncompressed.
    pub fn bytes(&self) -> u64 {
        (self.rows() * self.row_bytes()) as u64
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
    open_with(path, false)
}

/// [`open`], with HDF5's chunk cache off when `streaming`: reads of whole chunks then go
/// straight from the file into the caller's buffer instead of through the cache.
pub fn open_with(path: &Path, streaming: bool) -> Result<DataFile> {
    let df = open_checked(path, streaming)?;
    if df.info.elem == Elem::F16 {
        bail!(unsupported_dtype(path, "float16"));
    }
    Ok(df)
}

/// [`open`], also accepting float16 `/data` (for `fewstep data inspect`, which reports what a
/// file holds rather than refusing it).
pub fn open_any(path: &Path) -> Result<DataFile> {
    open_checked(path, false)
}

/// The refusal of a `/data` dtype the loader does not read, and what to do.
fn unsupported_dtype(path: &Path, dtype: &str) -> String {
    format!(
        "{}: `/data` has dtype {dtype}; supported are float32, float64 and uint8 (images): \
         convert it, e.g. with numpy `.astype(np.float32)` (`fewstep data inspect` reads it as it \
         is)",
        path.display()
    )
}

fn open_checked(path: &Path, streaming: bool) -> Result<DataFile> {
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    let mut builder = hdf5::File::with_options();
    if streaming {
        builder.with_fapl(|p| p.chunk_cache(0, 0, 0.0));
    }
    let file = builder.open(path).with_context(|| {
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
    check_declared_size(&data)?;
    let elem = elem_of(&data).with_context(|| format!("{}: `/data`", path.display()))?;
    let elem = match elem {
        Some(e) => e,
        None => bail!(unsupported_dtype(path, &dtype_name(&data))),
    };
    let chunk = data.chunk();
    check_filters(path, &data)?;
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
    let dtype = ds.dtype()?;
    // The crate cannot describe float16 (`to_descriptor` fails), but HDF5 knows its class.
    if is_float16(&dtype) {
        return Ok(Some(Elem::F16));
    }
    // Another type HDF5 has but the crate cannot describe is unsupported, not an error.
    let Ok(descriptor) = dtype.to_descriptor() else {
        return Ok(None);
    };
    Ok(match descriptor {
        TypeDescriptor::Unsigned(IntSize::U1) => Some(Elem::U8),
        TypeDescriptor::Float(FloatSize::U4) => Some(Elem::F32),
        TypeDescriptor::Float(FloatSize::U8) => Some(Elem::F64),
        _ => None,
    })
}

/// Whether `dtype` is a 2-byte IEEE float (float16; HDF5 converts it to float32 on reads).
fn is_float16(dtype: &hdf5::Datatype) -> bool {
    use hdf5_metno_sys::h5t::{H5T_class_t, H5Tget_class, H5Tget_fields};
    if dtype.size() != 2 {
        return false;
    }
    // SAFETY: `dtype` holds a valid datatype id for the duration of the calls; the out
    // parameters are plain integers.
    unsafe {
        if H5Tget_class(dtype.id()) != H5T_class_t::H5T_FLOAT {
            return false;
        }
        let (mut spos, mut epos, mut esize, mut mpos, mut msize) = (0, 0, 0, 0, 0);
        let ok = H5Tget_fields(
            dtype.id(),
            &mut spos,
            &mut epos,
            &mut esize,
            &mut mpos,
            &mut msize,
        );
        // IEEE binary16: sign bit 15, 5 exponent bits at 10, 10 mantissa bits at 0.
        ok >= 0 && (spos, epos, esize, mpos, msize) == (15, 10, 5, 0, 10)
    }
}

/// A readable dtype name for error messages.
pub fn dtype_name(ds: &hdf5::Dataset) -> String {
    match ds.dtype().and_then(|t| t.to_descriptor()) {
        Ok(TypeDescriptor::Integer(s)) => format!("int{}", s as usize * 8),
        Ok(TypeDescriptor::Unsigned(s)) => format!("uint{}", s as usize * 8),
        Ok(TypeDescriptor::Float(s)) => format!("float{}", s as usize * 8),
        Ok(other) => format!("{other}"),
        // float16 ("Invalid size of float datatype") and other types the crate cannot map.
        Err(e) => match ds.dtype().map(|t| t.size()) {
            Ok(n) if e.to_string().contains("float") => format!("float{}", n * 8),
            Ok(n) => format!("a {n}-byte type ({e})"),
            Err(_) => format!("unknown ({e})"),
        },
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
    check_declared_size(&ds)?;
    Ok(Some(
        ds.read_raw::<i64>()
            .with_context(|| format!("{path}: reading `/labels`"))?,
    ))
}

/// Reads row ranges of `/data` as little-endian bytes of the stored element type.
///
/// Unfiltered little-endian data (contiguous, or chunked with whole rows per chunk) is read with
/// plain `pread`s at the addresses HDF5 reports, straight into the caller's buffer; anything else
/// (compressed, big-endian, chunks that split rows) goes through HDF5's hyperslab reads.
pub struct RowReader {
    pub df: DataFile,
    direct: Option<(std::fs::File, Direct)>,
}

#[derive(Clone)]
enum Direct {
    /// File offset of row 0.
    Contiguous(u64),
    /// Rows per chunk and the file address of each chunk.
    Chunked(usize, Vec<u64>),
}

impl RowReader {
    pub fn new(df: DataFile) -> Result<Self> {
        let direct = match direct_layout(&df) {
            Some(d) => Some((
                std::fs::File::open(&df.info.path)
                    .with_context(|| format!("cannot open {}", df.info.path.display()))?,
                d,
            )),
            None => None,
        };
        Ok(RowReader { df, direct })
    }

    pub fn info(&self) -> &DataInfo {
        &self.df.info
    }

    /// Whether reads bypass HDF5 (see the type's docs).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// `/data` mapped into memory, where reads can bypass HDF5 (see the type's docs) and every
    /// row lies inside the file; `None` otherwise.
    pub fn map(&self) -> Result<Option<MappedRows>> {
        let Some((file, layout)) = &self.direct else {
            return Ok(None);
        };
        // SAFETY: the mapping is read-only and private to this process. Rust's aliasing rules
        // assume it does not change underneath; a dataset file rewritten or truncated by
        // another process during training breaks that (truncation faults with SIGBUS), as it
        // would corrupt any reader. `LoaderConfig::map_file = false` reads with `pread`
        // instead.
        let map = unsafe { memmap2::Mmap::map(file) }
            .with_context(|| format!("cannot map {}", self.df.info.path.display()))?;
        let mapped = MappedRows {
            map,
            layout: layout.clone(),
            row_bytes: self.row_bytes(),
        };
        let n = self.df.info.rows();
        let inside = match layout {
            Direct::Contiguous(_) => mapped.end_of(0, n) <= mapped.map.len() as u64,
            Direct::Chunked(rows, addrs) => (0..addrs.len()).all(|k| {
                let start = k * rows;
                mapped.end_of(start, (start + rows).min(n)) <= mapped.map.len() as u64
            }),
        };
        Ok(inside.then_some(mapped))
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.df.info.row_bytes()
    }

    /// Reads rows `start..end` into `out`, which must hold exactly their bytes.
    pub fn read_into(&self, start: usize, end: usize, out: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let rb = self.row_bytes();
        assert_eq!(out.len(), (end - start) * rb, "read_into: buffer size");
        let context = || {
            format!(
                "{}: reading `/data` rows {start}..{end}",
                self.df.info.path.display()
            )
        };
        match &self.direct {
            Some((file, Direct::Contiguous(offset))) => file
                .read_exact_at(out, offset + (start * rb) as u64)
                .with_context(context),
            Some((file, Direct::Chunked(rows, addrs))) => {
                let mut row = start;
                while row < end {
                    let (k, within) = (row / rows, row % rows);
                    let take = (rows - within).min(end - row);
                    let dst = &mut out[(row - start) * rb..(row - start + take) * rb];
                    file.read_exact_at(dst, addrs[k] + (within * rb) as u64)
                        .with_context(context)?;
                    row += take;
                }
                Ok(())
            }
            None => self.read_hdf5(start, end, out).with_context(context),
        }
    }

    fn read_hdf5(&self, start: usize, end: usize, out: &mut [u8]) -> Result<()> {
        let mut sel = vec![hdf5::SliceOrIndex::from(start..end)];
        sel.extend((1..self.df.info.shape.len()).map(|_| hdf5::SliceOrIndex::from(..)));
        let sel = hdf5::Hyperslab::from(sel);
        let reader = self.df.data.as_reader();
        match self.df.info.elem {
            Elem::U8 => {
                let v = reader.read_slice::<u8, _, ndarray::IxDyn>(sel)?;
                out.copy_from_slice(v.as_slice().expect("standard layout"));
            }
            Elem::F32 => {
                let v = reader.read_slice::<f32, _, ndarray::IxDyn>(sel)?;
                for (o, x) in out.chunks_exact_mut(4).zip(v.iter()) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
            }
            Elem::F64 => {
                let v = reader.read_slice::<f64, _, ndarray::IxDyn>(sel)?;
                for (o, x) in out.chunks_exact_mut(8).zip(v.iter()) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
            }
            Elem::F16 => {
                // HDF5 converts float16 to float32 exactly; back to the stored 2 bytes.
                let v = reader.read_slice::<f32, _, ndarray::IxDyn>(sel)?;
                for (o, x) in out.chunks_exact_mut(2).zip(v.iter()) {
                    o.copy_from_slice(&half::f16::from_f32(*x).to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

/// Rows of `/data` as slices of the mapped file: no copy into a read buffer, so a batch costs
/// one copy of its rows (see [`RowReader::map`]).
pub struct MappedRows {
    map: memmap2::Mmap,
    layout: Direct,
    row_bytes: usize,
}

impl MappedRows {
    /// The bytes of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &[u8] {
        let at = self.offset(r) as usize;
        &self.map[at..at + self.row_bytes]
    }

    /// Asks the kernel to read rows `start..end` ahead, for a file not yet in the page cache;
    /// advisory, so failures are ignored.
    pub fn prefetch(&self, start: usize, end: usize) {
        let mut row = start;
        while row < end {
            let stop = match &self.layout {
                Direct::Contiguous(_) => end,
                Direct::Chunked(rows, _) => ((row / rows + 1) * rows).min(end),
            };
            let at = self.offset(row);
            let len = (self.end_of(row, stop) - at) as usize;
            let _ = self
                .map
                .advise_range(memmap2::Advice::WillNeed, at as usize, len);
            row = stop;
        }
    }

    fn offset(&self, r: usize) -> u64 {
        let rb = self.row_bytes as u64;
        match &self.layout {
            Direct::Contiguous(offset) => offset + r as u64 * rb,
            Direct::Chunked(rows, addrs) => addrs[r / rows] + (r % rows) as u64 * rb,
        }
    }

    /// One past the last byte of rows `start..end`, which lie in one chunk.
    fn end_of(&self, start: usize, end: usize) -> u64 {
        self.offset(start) + ((end - start) * self.row_bytes) as u64
    }
}

/// Where unfiltered little-endian rows lie in the file, if they can be read directly.
fn direct_layout(df: &DataFile) -> Option<Direct> {
    use hdf5::dataset::Layout;
    use hdf5::datatype::ByteOrder;
    let info = &df.info;
    let little = match df.data.dtype().ok()?.byte_order() {
        ByteOrder::LittleEndian => true,
        ByteOrder::None => info.elem.size() == 1,
        _ => false,
    };
    if !little || !df.data.filters().is_empty() || info.rows() == 0 {
        return None;
    }
    match df.data.layout() {
        Layout::Contiguous => df.data.offset().map(Direct::Contiguous),
        Layout::Chunked => {
            let chunk = info.chunk.as_ref()?;
            if chunk[1..] != info.shape[1..] {
                return None;
            }
            let rows = chunk[0].max(1);
            chunk_addrs(&df.data, info.rows().div_ceil(rows), rows, info.shape.len())
                .map(|a| Direct::Chunked(rows, a))
        }
        _ => None,
    }
}

/// File addresses of the chunks starting at rows 0, `rows`, 2 `rows`, ...; `None` if any chunk
/// is unallocated. (hdf5-metno only wraps lookups by chunk index, which are linear in the index
/// in HDF5 1.10; the lookup by coordinate is logarithmic.)
fn chunk_addrs(ds: &hdf5::Dataset, count: usize, rows: usize, rank: usize) -> Option<Vec<u64>> {
    use hdf5_metno_sys::h5::{haddr_t, hsize_t, HADDR_UNDEF};
    use hdf5_metno_sys::h5d::H5Dget_chunk_info_by_coord;
    hdf5::sync::sync(|| {
        let mut addrs = Vec::with_capacity(count);
        let mut offset: Vec<hsize_t> = vec![0; rank];
        for k in 0..count {
            offset[0] = (k * rows) as hsize_t;
            let (mut mask, mut addr, mut size): (u32, haddr_t, hsize_t) = (0, 0, 0);
            // SAFETY: `offset` has one entry per dimension of the dataset, the out-pointers are
            // valid locals, and the library is entered under hdf5-metno's global lock.
            let status = unsafe {
                H5Dget_chunk_info_by_coord(
                    ds.id(),
                    offset.as_ptr(),
                    &mut mask,
                    &mut addr,
                    &mut size,
                )
            };
            if status < 0 || addr == HADDR_UNDEF {
                return None;
            }
            addrs.push(addr);
        }
        Some(addrs)
    })
}

/// Appends one row, given as little-endian bytes of `elem`, to `out` as float32; returns the
/// position within the row and the value of its first non-finite element, if any.
#[inline]
pub fn push_row(elem: Elem, bytes: &[u8], out: &mut Vec<f32>) -> Option<(usize, f64)> {
    match elem {
        Elem::U8 => {
            push_u8(bytes, out);
            None
        }
        Elem::F32 => {
            let start = out.len();
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            );
            first_bad(&out[start..])
        }
        Elem::F64 => {
            let v = |b: &[u8]| f64::from_le_bytes(b.try_into().expect("8 bytes"));
            out.extend(bytes.chunks_exact(8).map(|b| v(b) as f32));
            let bad = bytes.chunks_exact(8).position(|b| !v(b).is_finite());
            bad.map(|i| (i, v(&bytes[i * 8..i * 8 + 8])))
        }
        Elem::F16 => {
            let start = out.len();
            out.extend(bytes.chunks_exact(2).map(f16_at));
            first_bad(&out[start..])
        }
    }
}

/// The float16 value of two little-endian bytes, as float32 (exact).
#[inline]
pub fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// uint8 -> [-1, 1], vectorised with AVX2 where the CPU has it (it writes four bytes for
/// every byte read).
#[inline]
pub fn push_u8(bytes: &[u8], out: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { push_u8_avx2(bytes, out) };
    }
    out.extend(bytes.iter().map(|&x| u8_to_f32(x)));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn push_u8_avx2(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(bytes.iter().map(|&x| u8_to_f32(x)));
}

/// The uint8 -> [-1, 1] scaling, the same as `read_data` (`data::h5`).
#[inline(always)]
pub fn u8_to_f32(x: u8) -> f32 {
    x as f32 / 127.5 - 1.0
}

fn first_bad(s: &[f32]) -> Option<(usize, f64)> {
    s.iter()
        .position(|x| !x.is_finite())
        .map(|i| (i, s[i] as f64))
}
