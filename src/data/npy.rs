//! Reading NumPy `.npy` arrays (format versions 1-3) as a stream of values, for
//! `fewstep data import`. `.npz` archives are zip files of `.npy` members (read with `zip`).
//!
//! Only what datasets need: C-order arrays of uint8, float32/64 and integers (labels), either
//! byte order. The header is a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (10, 3), }`.

use anyhow::{bail, Context, Result};
use std::io::Read;

/// Element types of an `.npy` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyType {
    U8,
    F32,
    F64,
    /// Integers of `size` bytes (labels).
    Int {
        size: usize,
        signed: bool,
    },
}

/// The parsed header of an `.npy` array; the values follow it in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: NpyType,
    pub big_endian: bool,
    pub shape: Vec<usize>,
}

impl NpyHeader {
    pub fn elem_size(&self) -> usize {
        match self.dtype {
            NpyType::U8 => 1,
            NpyType::F32 => 4,
            NpyType::F64 => 8,
            NpyType::Int { size, .. } => size,
        }
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// numpy's name of the dtype.
    pub fn dtype_name(&self) -> String {
        match self.dtype {
            NpyType::U8 => "uint8".into(),
            NpyType::F32 => "float32".into(),
            NpyType::F64 => "float64".into(),
            NpyType::Int { size, signed } => {
                format!("{}int{}", if signed { "" } else { "u" }, size * 8)
            }
        }
    }
}

/// Reads the magic string and header, leaving `r` at the first value.
pub fn read_header(r: &mut (impl Read + ?Sized)) -> Result<NpyHeader> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).context("reading the .npy header")?;
    if &pre[..6] != b"\x93NUMPY" {
        bail!("not a .npy array (no \\x93NUMPY magic); save arrays with numpy.save or savez");
    }
    let len = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)?;
            u32::from_le_bytes(b) as usize
        }
        v => bail!(".npy format version {v} is not supported (1-3 are)"),
    };
    let mut text = vec![0u8; len];
    r.read_exact(&mut text)?;
    parse_header(&String::from_utf8_lossy(&text))
}

/// Parses the header dict.
pub fn parse_header(h: &str) -> Result<NpyHeader> {
    let descr = quoted_value(h, "descr").with_context(|| {
        format!("no 'descr' string in .npy header {h:?} (structured dtypes are not supported)")
    })?;
    let fortran = value_after(h, "fortran_order")
        .with_context(|| format!("no 'fortran_order' in .npy header {h:?}"))?;
    if fortran.starts_with("True") {
        bail!(
            "the array is stored in Fortran (column-major) order; save np.ascontiguousarray(a) instead"
        );
    }
    let shape =
        value_after(h, "shape").with_context(|| format!("no 'shape' in .npy header {h:?}"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .with_context(|| format!("bad 'shape' in .npy header {h:?}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad 'shape' in .npy header {h:?}"))?;
    let (order, code) = descr.split_at(1.min(descr.len()));
    let big_endian = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => bail!("unsupported .npy dtype {descr:?}"),
    };
    let dtype = match code {
        "u1" => NpyType::U8,
        "f4" => NpyType::F32,
        "f8" => NpyType::F64,
        "i1" | "i2" | "i4" | "i8" | "u2" | "u4" | "u8" => NpyType::Int {
            size: code[1..].parse().expect("digit"),
            signed: code.starts_with('i'),
        },
        _ => bail!(
            "unsupported .npy dtype {descr:?}; supported are uint8, float32, float64 and \
             integers (for labels)"
        ),
    };
    let header = NpyHeader {
        dtype,
        big_endian,
        shape,
    };
    // A damaged header must not overflow the sizes computed from it.
    let bytes = header
        .shape
        .iter()
        .try_fold(header.elem_size(), |a, &d| a.checked_mul(d));
    if bytes.is_none() {
        bail!(
            "the .npy header's shape {:?} is too large to address (a damaged file?)",
            header.shape
        );
    }
    Ok(header)
}

/// The text after `'key':`, trimmed at the start.
fn value_after<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let at = h
        .find(&format!("'{key}'"))
        .or_else(|| h.find(&format!("\"{key}\"")))?;
    let rest = &h[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

fn quoted_value<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let v = value_after(h, key)?;
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    v[1..].split(q).next()
}

/// Reads `count` values as uint8 (only for uint8 arrays) into `out`.
pub fn read_u8(
    r: &mut (impl Read + ?Sized),
    h: &NpyHeader,
    count: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    assert_eq!(h.dtype, NpyType::U8);
    out.resize(count, 0);
    r.read_exact(out).context("the .npy data ends early")
}

/// Reads `count` values of a float array as float32 into `out`.
pub fn read_f32(
    r: &mut (impl Read + ?Sized),
    h: &NpyHeader,
    count: usize,
    bytes: &mut Vec<u8>,
    out: &mut Vec<f32>,
) -> Result<()> {
    bytes.resize(count * h.elem_size(), 0);
    r.read_exact(bytes).context("the .npy data ends early")?;
    out.clear();
    let be = h.big_endian;
    match h.dtype {
        NpyType::F32 => out.extend(bytes.chunks_exact(4).map(|b| {
            let b = b.try_into().expect("4 bytes");
            if be {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            }
        })),
        NpyType::F64 => out.extend(bytes.chunks_exact(8).map(|b| {
            let b = b.try_into().expect("8 bytes");
            (if be {
                f64::from_be_bytes(b)
            } else {
                f64::from_le_bytes(b)
            }) as f32
        })),
        other => bail!("read_f32 on a {other:?} array"),
    }
    Ok(())
}

/// Reads a whole integer (or uint8) array as int64.
pub fn read_ints(r: &mut (impl Read + ?Sized), h: &NpyHeader) -> Result<Vec<i64>> {
    let (size, signed) = match h.dtype {
        NpyType::U8 => (1, false),
        NpyType::Int { size, signed } => (size, signed),
        _ => bail!("labels must be integers, not {}", h.dtype_name()),
    };
    let mut bytes = vec![0u8; h.len() * size];
    r.read_exact(&mut bytes)
        .context("the .npy data ends early")?;
    bytes
        .chunks_exact(size)
        .map(|b| {
            let mut le = [0u8; 8];
            le[..size].copy_from_slice(b);
            if h.big_endian {
                le[..size].reverse();
            }
            let negative = signed && le[size - 1] & 0x80 != 0;
            if negative {
                le[size..].fill(0xff);
            }
            let v = u64::from_le_bytes(le);
            if !signed && size == 8 && v > i64::MAX as u64 {
                bail!("label {v} does not fit in int64");
            }
            Ok(v as i64)
        })
        .collect()
}
