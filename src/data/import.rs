//! `fewstep data import`: NumPy `.npy`/`.npz` arrays and folders of PNG images to a chunked
//! (optionally compressed) HDF5 dataset, streamed block by block.
//!
//! Layouts accepted for arrays (`data` member of an `.npz`, or the `.npy` itself), with
//! `--shape C,H,W`:
//! - `[N, C*H*W]` flat rows: channel-planar by default (all of channel 0, then channel 1, ...), as
//!   in the downsampled-ImageNet and CIFAR batches; `--layout hwc` for interleaved pixels.
//! - `[N, C, H, W]`: stored as is.
//! - `[N, H, W, C]`: transposed to `[N, C, H, W]`, recognised by its shape; when C = H = W the
//!   shape cannot tell, and `--layout` decides (default chw).
//! - without `--shape`, rows keep their stored shape (e.g. feature vectors `[N, D]`).
//!
//! uint8 stays uint8 (scaled to [-1, 1] when loaded); float64 is stored as float32. An `.npz`
//! member `labels` `[N]` (integers) becomes `/labels`. Several inputs are concatenated in order.

use super::h5::write_with;
use super::npy::{self, NpyHeader, NpyType};
use super::source::Elem;
use super::write::{chunk_rows, write_labels, RowWriter};
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Where pixels of a 3-D row `C,H,W` come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Channel-planar: `[C, H, W]`.
    Chw,
    /// Interleaved: `[H, W, C]`.
    Hwc,
}

/// Input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Npy,
    Npz,
    Png,
}

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Row shape to store, e.g. `[3, 32, 32]`.
    pub shape: Option<Vec<usize>>,
    /// Pixel layout of the source rows (see the module docs).
    pub layout: Option<Layout>,
    /// Deflate level 0-9.
    pub compress: Option<u8>,
    /// Stored as the `source` attribute of `/data`.
    pub source: String,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct ImportSummary {
    /// `[N, row...]`.
    pub shape: Vec<usize>,
    pub elem: Elem,
    pub labels: bool,
    /// Whether rows were transposed from `[H, W, C]`.
    pub transposed: bool,
    /// NaN/Inf values seen (float inputs); the loader refuses batches holding them.
    pub non_finite: u64,
}

/// Imports `.npy` or `.npz` files (concatenated in order) into `out`.
pub fn import_arrays(
    format: Format,
    files: &[PathBuf],
    out: &Path,
    opts: &ImportOptions,
) -> Result<ImportSummary> {
    ensure!(!files.is_empty(), "no input files given");
    ensure!(
        format != Format::Png,
        "import_arrays reads npy/npz; use import_png"
    );
    // Scan headers (and the small label arrays) first, so a bad input fails before writing.
    let mut heads = Vec::new();
    let mut all_labels: Option<Vec<i64>> = None;
    for (i, f) in files.iter().enumerate() {
        let h = with_array(format, f, "data", |_, h| Ok(h.clone()))?.with_context(|| {
            format!(
                "{}: no `data` array (members: {}); save it with np.savez(path, data=array, labels=labels)",
                f.display(),
                npz_members(f).unwrap_or_default().join(", ")
            )
        })?;
        if h.shape.len() < 2 {
            bail!(
                "{}: the data array has shape {:?}; expected [N, ...] with one row per sample",
                f.display(),
                h.shape
            );
        }
        if let Some((_, first)) = heads.first() {
            let first: &NpyHeader = first;
            if first.shape[1..] != h.shape[1..] || first.dtype != h.dtype {
                bail!(
                    "{}: rows are {} {:?} but {} has {} {:?}; all inputs must match",
                    f.display(),
                    h.dtype_name(),
                    &h.shape[1..],
                    files[0].display(),
                    first.dtype_name(),
                    &first.shape[1..]
                );
            }
        }
        let labels = with_array(format, f, "labels", |r, lh| {
            ensure!(
                lh.shape == [h.shape[0]],
                "`labels` has shape {:?} but `data` has {} rows",
                lh.shape,
                h.shape[0]
            );
            npy::read_ints(r, lh)
        })
        .with_context(|| format!("{}: reading `labels`", f.display()))?;
        match (labels, &mut all_labels, i) {
            (Some(l), None, 0) => all_labels = Some(l),
            (Some(l), Some(all), _) => all.extend(l),
            (None, None, _) => {}
            _ => bail!(
                "{}: some inputs have `labels` and some do not; give all or none",
                f.display()
            ),
        }
        heads.push((f.clone(), h));
    }
    let first = heads[0].1.clone();
    let elem = match first.dtype {
        NpyType::U8 => Elem::U8,
        NpyType::F32 | NpyType::F64 => Elem::F32,
        NpyType::Int { .. } => bail!(
            "{}: data is {}; import uint8 (images) or float arrays, e.g. convert with .astype(np.float32)",
            files[0].display(),
            first.dtype_name()
        ),
    };
    let (row, transpose) = target_row(&first.shape[1..], opts)?;
    let n: usize = heads.iter().map(|(_, h)| h.shape[0]).sum();
    let d: usize = row.iter().product();
    let mut shape = vec![n];
    shape.extend(&row);

    let bar = crate::progress::bar(n as u64, "import");
    let mut non_finite = 0u64;
    write_with(out, |file| {
        let mut w = match elem {
            Elem::U8 => RowWriter::create::<u8>(file, &shape, opts.compress)?,
            _ => RowWriter::create::<f32>(file, &shape, opts.compress)?,
        };
        let block = chunk_rows(n, d * elem.size());
        let (mut bytes, mut vals, mut tmp8, mut tmp32) = (vec![], vec![], vec![], vec![]);
        for (f, h) in &heads {
            with_array(format, f, "data", |r, h2| {
                ensure!(h2 == h, "changed while importing");
                let mut left = h.shape[0];
                while left > 0 {
                    let k = block.min(left);
                    if elem == Elem::U8 {
                        npy::read_u8(r, h, k * d, &mut tmp8)?;
                        w.write(transposed(&tmp8, transpose, &row, &mut bytes))?;
                    } else {
                        npy::read_f32(r, h, k * d, &mut bytes, &mut tmp32)?;
                        non_finite += tmp32.iter().filter(|v| !v.is_finite()).count() as u64;
                        w.write(transposed(&tmp32, transpose, &row, &mut vals))?;
                    }
                    left -= k;
                    bar.inc(k as u64);
                }
                Ok(())
            })
            .with_context(|| format!("{}: reading `data`", f.display()))?;
        }
        let mut attrs = vec![("source", opts.source.clone())];
        if row.len() == 3 {
            attrs.push(("layout", "CHW".to_string()));
        }
        w.finish(&attrs)?;
        if let Some(l) = &all_labels {
            write_labels(file, l, None)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(ImportSummary {
        shape,
        elem,
        labels: all_labels.is_some(),
        transposed: transpose,
        non_finite,
    })
}

/// The stored row shape and whether rows need an HWC -> CHW transpose.
fn target_row(src: &[usize], opts: &ImportOptions) -> Result<(Vec<usize>, bool)> {
    let src_dim: usize = src.iter().product();
    let Some(want) = &opts.shape else {
        return match (opts.layout, src) {
            (Some(Layout::Hwc), [h, w, c]) => Ok((vec![*c, *h, *w], true)),
            (Some(Layout::Hwc), _) => {
                bail!("--layout hwc needs --shape C,H,W for rows of shape {src:?}")
            }
            _ => Ok((src.to_vec(), false)),
        };
    };
    let want_dim: usize = want.iter().product();
    if want_dim != src_dim {
        bail!(
            "--shape {} holds {want_dim} values per row but the input rows have shape {src:?} \
             ({src_dim} values)",
            want.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let transpose = match (opts.layout, want.as_slice()) {
        (Some(l), [_, _, _]) => l == Layout::Hwc,
        (Some(Layout::Hwc), _) => bail!("--layout hwc needs a 3-D --shape C,H,W"),
        (None, [c, h, w]) => src == [*h, *w, *c] && src != want.as_slice(),
        _ => false,
    };
    Ok((want.clone(), transpose))
}

/// `src` (whole rows) as stored: as is, or each row transposed from [H, W, C] to [C, H, W].
fn transposed<'a, T: Copy + Default>(
    src: &'a [T],
    transpose: bool,
    row: &[usize],
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    if !transpose {
        return src;
    }
    let (c, h, w) = (row[0], row[1], row[2]);
    let plane = h * w;
    buf.resize(src.len(), T::default());
    for (s, t) in src
        .chunks_exact(c * plane)
        .zip(buf.chunks_exact_mut(c * plane))
    {
        for p in 0..plane {
            for k in 0..c {
                t[k * plane + p] = s[p * c + k];
            }
        }
    }
    buf
}

/// Runs `f` on array `key` of an input (`.npy`: only `data`, the file itself), positioned after
/// its header; `None` when there is no such array.
fn with_array<T>(
    format: Format,
    path: &Path,
    key: &str,
    f: impl FnOnce(&mut dyn Read, &NpyHeader) -> Result<T>,
) -> Result<Option<T>> {
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    match format {
        Format::Npy if key == "data" => {
            let mut r = BufReader::with_capacity(1 << 20, open()?);
            let h = npy::read_header(&mut r).with_context(|| path.display().to_string())?;
            f(&mut r, &h).map(Some)
        }
        Format::Npy => Ok(None),
        _ => {
            let mut zip = zip::ZipArchive::new(BufReader::new(open()?))
                .with_context(|| format!("{} is not an .npz (zip) archive", path.display()))?;
            let Ok(member) = zip.by_name(&format!("{key}.npy")) else {
                return Ok(None);
            };
            let mut r = BufReader::with_capacity(1 << 20, member);
            let h = npy::read_header(&mut r)
                .with_context(|| format!("{}: member {key}.npy", path.display()))?;
            f(&mut r, &h).map(Some)
        }
    }
}

fn npz_members(path: &Path) -> Option<Vec<String>> {
    let zip = zip::ZipArchive::new(BufReader::new(File::open(path).ok()?)).ok()?;
    Some(zip.file_names().map(|s| s.to_string()).collect())
}

/// Imports a folder of PNG images of one size. Images directly in `dir` are unlabelled; with
/// class subfolders (`dir/cat/*.png`, `dir/dog/*.png`) the label is the subfolder's index in
/// sorted order and `/labels` gets a `classes` attribute. `--shape` picks 1 (grey), 3 (RGB,
/// the default) or 4 (RGBA) channels and checks the size.
pub fn import_png(dir: &Path, out: &Path, opts: &ImportOptions) -> Result<ImportSummary> {
    let (files, classes) = png_files(dir)?;
    let first = image::image_dimensions(&files[0].0)
        .with_context(|| format!("cannot read {}", files[0].0.display()))?;
    let (w, h) = (first.0 as usize, first.1 as usize);
    let c = match opts.shape.as_deref() {
        None => 3,
        Some([c @ (1 | 3 | 4), hh, ww]) if (*hh, *ww) == (h, w) => *c,
        Some(s) => bail!(
            "--shape {s:?} does not fit {}, a {w}x{h} image: give C,{h},{w} with C = 1 (grey), \
             3 (RGB) or 4 (RGBA)",
            files[0].0.display()
        ),
    };
    let n = files.len();
    let shape = vec![n, c, h, w];
    let d = c * h * w;
    let bar = crate::progress::bar(n as u64, "import");
    write_with(out, |file| {
        let mut wr = RowWriter::create::<u8>(file, &shape, opts.compress)?;
        let block = chunk_rows(n, d);
        let mut rows = Vec::with_capacity(block * d);
        let mut chw = Vec::new();
        for (path, _) in &files {
            let img =
                image::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            if (img.width() as usize, img.height() as usize) != (w, h) {
                bail!(
                    "{} is {}x{} but {} is {w}x{h}; all images must have one size",
                    path.display(),
                    img.width(),
                    img.height(),
                    files[0].0.display()
                );
            }
            let hwc = match c {
                1 => img.to_luma8().into_raw(),
                3 => img.to_rgb8().into_raw(),
                _ => img.to_rgba8().into_raw(),
            };
            rows.extend_from_slice(transposed(&hwc, true, &shape[1..], &mut chw));
            if rows.len() == block * d {
                wr.write(&rows)?;
                rows.clear();
            }
            bar.inc(1);
        }
        wr.write(&rows)?;
        wr.finish(&[
            ("source", opts.source.clone()),
            ("layout", "CHW".to_string()),
        ])?;
        if let Some(classes) = &classes {
            let labels: Vec<i64> = files.iter().map(|f| f.1).collect();
            write_labels(file, &labels, Some(classes))?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(ImportSummary {
        shape,
        elem: Elem::U8,
        labels: classes.is_some(),
        transposed: false,
        non_finite: 0,
    })
}

/// The PNG files of `dir` (sorted) with their labels, and the class names when `dir` holds
/// class subfolders.
#[allow(clippy::type_complexity)]
fn png_files(dir: &Path) -> Result<(Vec<(PathBuf, i64)>, Option<Vec<String>>)> {
    let list = |d: &Path| -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
        let mut pngs = Vec::new();
        let mut dirs = Vec::new();
        for e in std::fs::read_dir(d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")) {
                pngs.push(p);
            }
        }
        pngs.sort();
        dirs.sort();
        Ok((pngs, dirs))
    };
    let (pngs, dirs) = list(dir)?;
    if !pngs.is_empty() {
        return Ok((pngs.into_iter().map(|p| (p, 0)).collect(), None));
    }
    let mut files = Vec::new();
    let mut classes = Vec::new();
    for sub in dirs {
        let (pngs, _) = list(&sub)?;
        if pngs.is_empty() {
            continue;
        }
        let label = classes.len() as i64;
        classes.push(
            sub.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        files.extend(pngs.into_iter().map(|p| (p, label)));
    }
    if files.is_empty() {
        bail!(
            "{} holds no .png files (directly, or in class subfolders)",
            dir.display()
        );
    }
    Ok((files, Some(classes)))
}
