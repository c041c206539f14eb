//! `fewstep data inspect`: what a dataset file holds, and a PNG grid of its first images.

use super::h5::read_str_attr;
use super::source::{self, push_row, DataInfo, Elem, RowReader};
use anyhow::{bail, Context, Result};
use image::ImageEncoder;
use std::fmt;
use std::io::Write;
use std::path::Path;

/// Summary of a dataset file; `Display` prints it for people.
#[derive(Clone, Debug)]
pub struct Report {
    pub info: DataInfo,
    /// Bytes `/data` takes in the file (compressed size when filtered).
    pub storage_bytes: u64,
    /// Minimum and maximum of the finite stored values.
    pub min: f64,
    pub max: f64,
    /// Mean and standard deviation of the finite values as loaded (uint8 scaled to [-1, 1]).
    pub mean: f64,
    pub std: f64,
    pub nan: u64,
    pub inf: u64,
    /// Rows holding a NaN or Inf: how many, and the first [`BAD_ROWS_SHOWN`] indices.
    pub bad_rows: u64,
    pub first_bad_rows: Vec<usize>,
    /// `/labels`: (number of distinct labels, smallest, largest, class names).
    pub labels: Option<LabelSummary>,
    /// Why `/labels` is unusable (wrong shape or dtype), reported instead of refusing the file.
    pub labels_problem: Option<String>,
    /// `/mixture` components K and dimension D, when present.
    pub mixture: Option<(usize, usize)>,
    /// String attributes of `/data`.
    pub attrs: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct LabelSummary {
    pub distinct: usize,
    pub min: i64,
    pub max: i64,
    pub classes: Option<String>,
}

/// How many indices of rows with NaN/Inf a report lists.
pub const BAD_ROWS_SHOWN: usize = 10;

/// Scans the whole of `/data` block by block. float16 `/data`, which the loader refuses, is
/// read and reported too (with a note that it needs converting).
pub fn inspect(path: &Path) -> Result<Report> {
    let rd = RowReader::new(source::open_any(path)?)?;
    let df = &rd.df;
    let info = df.info.clone();
    let n = info.rows();
    let block = (super::write::CHUNK_BYTES * 8 / info.row_bytes().max(1)).clamp(1, n.max(1));
    let mut st = Stats::default();
    let (mut bad_rows, mut first_bad_rows) = (0u64, Vec::new());
    let mut bytes = Vec::new();
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        bytes.resize((end - start) * rd.row_bytes(), 0);
        rd.read_into(start, end, &mut bytes)?;
        match info.elem {
            Elem::U8 => {
                // A histogram keeps this fast on big image sets.
                let mut hist = [0u64; 256];
                bytes.iter().for_each(|&x| hist[x as usize] += 1);
                for (x, &c) in hist.iter().enumerate().filter(|(_, c)| **c > 0) {
                    st.add(x as f64, source::u8_to_f32(x as u8) as f64, c);
                }
            }
            Elem::F16 | Elem::F32 | Elem::F64 => {
                let size = info.elem.size();
                for (r, row) in bytes.chunks_exact(rd.row_bytes()).enumerate() {
                    let mut finite = true;
                    for b in row.chunks_exact(size) {
                        let (x, loaded) = match size {
                            2 => {
                                let x = source::f16_at(b) as f64;
                                (x, x)
                            }
                            4 => {
                                let x = f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64;
                                (x, x)
                            }
                            _ => {
                                let x = f64::from_le_bytes(b.try_into().expect("8 bytes"));
                                (x, x as f32 as f64)
                            }
                        };
                        finite &= x.is_finite();
                        st.add(x, loaded, 1);
                    }
                    if !finite {
                        bad_rows += 1;
                        if first_bad_rows.len() < BAD_ROWS_SHOWN {
                            first_bad_rows.push(start + r);
                        }
                    }
                }
            }
        }
    }
    // Unusable labels are reported, not fatal: inspect is where a user looks at a bad file.
    let (labels, labels_problem) = match source::read_labels(df) {
        Ok(l) => (l, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let labels = labels
        .map(|l| -> Result<LabelSummary> {
            let mut sorted = l.clone();
            sorted.sort_unstable();
            sorted.dedup();
            Ok(LabelSummary {
                distinct: sorted.len(),
                min: sorted.first().copied().unwrap_or(0),
                max: sorted.last().copied().unwrap_or(0),
                classes: df
                    .file
                    .dataset("labels")
                    .ok()
                    .map(|d| read_str_attr(&d, "classes"))
                    .transpose()?
                    .flatten(),
            })
        })
        .transpose()?;
    let mixture = df
        .file
        .dataset("mixture/means")
        .ok()
        .map(|m| m.shape())
        .filter(|s| s.len() == 2)
        .map(|s| (s[0], s[1]));
    let attrs = df
        .data
        .attr_names()
        .with_context(|| format!("{}: cannot list the attributes of `/data`", path.display()))?
        .into_iter()
        .map(|k| {
            let v = read_str_attr(&df.data, &k)?.unwrap_or_else(|| "(not a string)".into());
            Ok((k, v))
        })
        .collect::<Result<_>>()?;
    Ok(Report {
        storage_bytes: df.data.storage_size(),
        info,
        min: st.min,
        max: st.max,
        mean: st.mean,
        std: st.std(),
        nan: st.nan,
        inf: st.inf,
        bad_rows,
        first_bad_rows,
        labels,
        labels_problem,
        mixture,
        attrs,
    })
}

/// Running statistics of the finite values. Mean and variance are Welford's running mean and
/// sum of squared deviations (with a count per update, for the uint8 histogram), which keep
/// their precision where the sum of squares minus the squared mean would cancel.
struct Stats {
    min: f64,
    max: f64,
    mean: f64,
    /// Sum of squared deviations from the running mean.
    m2: f64,
    count: u64,
    nan: u64,
    inf: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            count: 0,
            nan: 0,
            inf: 0,
        }
    }
}

impl Stats {
    /// Counts `times` values `x` (as stored) that load as `loaded`.
    fn add(&mut self, x: f64, loaded: f64, times: u64) {
        if x.is_nan() {
            self.nan += times;
        } else if x.is_infinite() {
            self.inf += times;
        } else if times > 0 {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
            self.count += times;
            let delta = loaded - self.mean;
            self.mean += delta * times as f64 / self.count as f64;
            self.m2 += delta * (loaded - self.mean) * times as f64;
        }
    }

    /// Population standard deviation (0 with no values).
    fn std(&self) -> f64 {
        (self.m2 / self.count.max(1) as f64).max(0.0).sqrt()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        writeln!(f, "file:        {}", i.path.display())?;
        writeln!(
            f,
            "/data:       {:?} {} (N = {}, rows {:?})",
            i.shape,
            i.elem.name(),
            i.rows(),
            i.row_shape()
        )?;
        let storage = match &i.chunk {
            Some(c) => format!("chunked {c:?}"),
            None => "contiguous".to_string(),
        };
        let filters = if i.filters.is_empty() {
            "no compression".to_string()
        } else {
            i.filters.join(", ")
        };
        writeln!(
            f,
            "storage:     {storage}, {filters}; {} in the file, {} uncompressed",
            mib(self.storage_bytes),
            mib(i.bytes())
        )?;
        if i.elem == Elem::F16 {
            writeln!(
                f,
                "note:        float16 is read here only; training, sampling and eval need float32, \
                 float64 or uint8 (numpy `.astype(np.float32)` converts)"
            )?;
        }
        if self.min <= self.max {
            write!(f, "values:      min {}, max {}", self.min, self.max)?;
            if i.elem == Elem::U8 {
                write!(f, " (loaded as v / 127.5 - 1)")?;
            }
            writeln!(f, "; loaded mean {:.4}, std {:.4}", self.mean, self.std)?;
        } else {
            writeln!(f, "values:      none finite")?;
        }
        write!(f, "non-finite:  {} NaN, {} Inf", self.nan, self.inf)?;
        if self.bad_rows > 0 {
            let rows: Vec<String> = self.first_bad_rows.iter().map(|r| r.to_string()).collect();
            let more = if self.bad_rows > rows.len() as u64 {
                ", ..."
            } else {
                ""
            };
            write!(
                f,
                " in {} rows (0-based: {}{more}; the loader refuses batches holding them)",
                self.bad_rows,
                rows.join(", ")
            )?;
        }
        writeln!(f)?;
        match &self.labels {
            Some(l) => writeln!(
                f,
                "/labels:     present, {} distinct in {}..={}{}",
                l.distinct,
                l.min,
                l.max,
                l.classes
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            )?,
            None => match &self.labels_problem {
                Some(p) => writeln!(f, "/labels:     unusable: {p}")?,
                None => writeln!(f, "/labels:     absent")?,
            },
        }
        match self.mixture {
            Some((k, d)) => writeln!(f, "/mixture:    present, K = {k} components in D = {d}")?,
            None => writeln!(f, "/mixture:    absent")?,
        }
        for (k, v) in &self.attrs {
            writeln!(f, "attr {k}: {v}")?;
        }
        Ok(())
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Writes the first `count` images of `path` as a PNG grid to `out`; returns how many.
/// Rows must be images: `[C, H, W]` with C = 1 or 3, or `[H, W]`. Float values are taken to be
/// in [-1, 1]. Small images are scaled up so the grid is readable.
pub fn write_grid(path: &Path, out: &Path, count: usize) -> Result<usize> {
    let rd = RowReader::new(source::open_any(path)?)?;
    let df = &rd.df;
    let (c, h, w) = match *df.info.row_shape() {
        [c @ (1 | 3), h, w] => (c, h, w),
        [h, w] => (1, h, w),
        ref s => bail!(
            "{}: rows of shape {s:?} are not images; a grid needs [C, H, W] with C = 1 or 3, \
             or [H, W]",
            path.display()
        ),
    };
    let k = count.min(df.info.rows()).max(1);
    let mut bytes = vec![0u8; k * rd.row_bytes()];
    rd.read_into(0, k, &mut bytes)?;
    let d = c * h * w;
    let mut vals = Vec::with_capacity(k * d);
    for row in bytes.chunks_exact(rd.row_bytes()) {
        push_row(df.info.elem, row, &mut vals);
    }
    let cols = (k as f64).sqrt().ceil() as usize;
    let grid_rows = k.div_ceil(cols);
    let scale = (64 / h.max(w)).max(1);
    let (th, tw, pad) = (h * scale, w * scale, 2);
    let (gw, gh) = (cols * (tw + pad) + pad, grid_rows * (th + pad) + pad);
    let mut img = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([255, 255, 255]));
    for (i, row) in vals.chunks_exact(d).enumerate() {
        let (x0, y0) = (pad + (i % cols) * (tw + pad), pad + (i / cols) * (th + pad));
        for y in 0..th {
            for x in 0..tw {
                let p = (y / scale) * w + x / scale;
                let px = |ch: usize| {
                    let v = row[ch.min(c - 1) * h * w + p];
                    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
                };
                img.put_pixel(
                    (x0 + x) as u32,
                    (y0 + y) as u32,
                    image::Rgb([px(0), px(1), px(2)]),
                );
            }
        }
    }
    crate::output::write_with(out, |f| {
        let mut w = std::io::BufWriter::new(f);
        image::codecs::png::PngEncoder::new(&mut w).write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ColorType::Rgb8,
        )?;
        Ok(w.flush()?)
    })
    .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn welford_keeps_the_spread_of_values_far_from_zero() {
        // 1e9 + {0, 1, 2, 3}: variance 1.25. Sum of squares minus squared mean loses it (the
        // squares are ~1e18, where f64 steps by 128).
        let mut st = Stats::default();
        let mut naive = (0.0, 0.0);
        for k in 0..4000 {
            let v = 1e9 + (k % 4) as f64;
            st.add(v, v, 1);
            naive = (naive.0 + v, naive.1 + v * v);
        }
        assert!((st.mean - (1e9 + 1.5)).abs() < 1e-6, "{}", st.mean);
        assert!((st.std() - 1.25f64.sqrt()).abs() < 1e-9, "{}", st.std());
        let naive_var = naive.1 / 4000.0 - (naive.0 / 4000.0).powi(2);
        assert!(
            (naive_var - 1.25).abs() > 1.0,
            "the naive formula happened to hold"
        );
    }

    #[test]
    fn counted_values_equal_repeated_ones() {
        // The uint8 histogram adds each value with its count.
        let (mut counted, mut one_by_one) = (Stats::default(), Stats::default());
        for (v, c) in [(-1.0, 3), (0.5, 1), (0.25, 5), (1.0, 2)] {
            counted.add(v, v, c);
            (0..c).for_each(|_| one_by_one.add(v, v, 1));
        }
        counted.add(f64::NAN, f64::NAN, 2);
        assert_eq!(counted.count, 11);
        assert_eq!(counted.nan, 2);
        assert!((counted.mean - one_by_one.mean).abs() < 1e-15);
        assert!((counted.std() - one_by_one.std()).abs() < 1e-15);
        let mean = (-3.0 + 0.5 + 1.25 + 2.0) / 11.0;
        let var = (3.0 * (-1.0f64 - mean).powi(2)
            + (0.5f64 - mean).powi(2)
            + 5.0 * (0.25f64 - mean).powi(2)
            + 2.0 * (1.0f64 - mean).powi(2))
            / 11.0;
        assert!((counted.mean - mean).abs() < 1e-15);
        assert!((counted.std() - var.sqrt()).abs() < 1e-15);
    }
}
