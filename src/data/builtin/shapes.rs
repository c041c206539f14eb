//! Procedural 3xSxS uint8 images of one coloured shape on a coloured background, labelled by
//! shape class: image training with no download.
//!
//! Image `i` depends only on `(seed, i)`, so sets are reproducible and can be made in blocks.
//! Shape size, position, rotation and both colours are random; the two colours are kept apart
//! so the shape is always visible. Edges are anti-aliased by 3x3 supersampling.

use crate::data::h5::{write_with, DataArray};
use crate::data::set::BuiltSet;
use crate::data::source::u8_to_f32;
use crate::data::write::{chunk_rows, write_labels, RowWriter};
use crate::seed::seeded;
use anyhow::{bail, Result};
use rand::Rng;
use std::path::Path;

/// Label `k` is shape `CLASSES[k]`.
pub const CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];

/// Renders image `i` into `out` (3 * size * size bytes, channel-planar RGB) and returns its label.
pub fn render(size: usize, seed: u64, i: u64, out: &mut [u8]) -> i64 {
    assert_eq!(
        out.len(),
        3 * size * size,
        "render: buffer is not 3x{size}x{size}"
    );
    let mut rng = seeded(splitmix(seed ^ splitmix(i)));
    let class = rng.gen_range(0..CLASSES.len());
    let bg: [f32; 3] = rng.gen::<[u8; 3]>().map(f32::from);
    let fg = loop {
        let c: [f32; 3] = rng.gen::<[u8; 3]>().map(f32::from);
        let dist2: f32 = (0..3).map(|k| (c[k] - bg[k]).powi(2)).sum();
        if dist2 >= 100.0 * 100.0 {
            break c;
        }
    };
    let s = size as f32;
    let r = rng.gen_range(0.2..0.4) * s; // radius of the circle the shape fits in
    let (cx, cy) = (rng.gen_range(r..s - r), rng.gen_range(r..s - r));
    let (sin, cos) = rng.gen_range(0.0..std::f32::consts::TAU).sin_cos();
    const SUB: usize = 3;
    let plane = size * size;
    for y in 0..size {
        for x in 0..size {
            let mut hits = 0;
            for sy in 0..SUB {
                for sx in 0..SUB {
                    let px = x as f32 + (sx as f32 + 0.5) / SUB as f32 - cx;
                    let py = y as f32 + (sy as f32 + 0.5) / SUB as f32 - cy;
                    // Rotate into the shape's frame, in units of r.
                    let u = (cos * px + sin * py) / r;
                    let v = (cos * py - sin * px) / r;
                    hits += inside(class, u, v) as usize;
                }
            }
            let cover = hits as f32 / (SUB * SUB) as f32;
            for k in 0..3 {
                let value = bg[k] + (fg[k] - bg[k]) * cover;
                out[k * plane + y * size + x] = value.round() as u8;
            }
        }
    }
    class as i64
}

/// Whether (u, v), in units of the radius, lies in shape `class`.
fn inside(class: usize, u: f32, v: f32) -> bool {
    match class {
        0 => u * u + v * v <= 1.0,
        1 => u.abs() <= 0.7 && v.abs() <= 0.7,
        // Equilateral triangle inscribed in the unit circle: each edge is 1/2 from the centre.
        2 => {
            const H: f32 = 0.866_025_4; // cos 30°: edge normals at 270°, 30°, 150°
            -v <= 0.5 && H * u + 0.5 * v <= 0.5 && -H * u + 0.5 * v <= 0.5
        }
        _ => (u.abs() <= 0.25 && v.abs() <= 0.9) || (v.abs() <= 0.25 && u.abs() <= 0.9),
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_size(size: usize) -> Result<()> {
    if size < 8 {
        bail!("shape images must be at least 8x8 pixels, got {size}");
    }
    Ok(())
}

/// The set in memory as float32 in [-1, 1] (what the loader yields for the uint8 file).
pub fn make(size: usize, n: usize, seed: u64) -> Result<BuiltSet> {
    check_size(size)?;
    let d = 3 * size * size;
    let mut img = vec![0u8; d];
    let mut values = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        labels.push(render(size, seed, i as u64, &mut img));
        values.extend(img.iter().map(|&x| u8_to_f32(x)));
    }
    Ok(BuiltSet {
        data: DataArray::new(values, vec![n, 3, size, size]),
        labels: Some(labels),
        mixture: None,
    })
}

/// Writes `n` images as uint8 `/data` [n, 3, size, size] with `/labels`, block by block.
pub fn write(path: &Path, size: usize, n: usize, seed: u64, source: &str) -> Result<()> {
    check_size(size)?;
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let d = 3 * size * size;
    let bar = crate::progress::bar(n as u64, &format!("shapes{size}"));
    write_with(path, |file| {
        let mut w = RowWriter::create::<u8>(file, &[n, 3, size, size], None)?;
        let block = chunk_rows(n, d);
        let mut buf = vec![0u8; block * d];
        let mut labels = super::labels_for(n)?;
        for start in (0..n).step_by(block) {
            let k = block.min(n - start);
            for (j, img) in buf[..k * d].chunks_exact_mut(d).enumerate() {
                labels.push(render(size, seed, (start + j) as u64, img));
            }
            w.write(&buf[..k * d])?;
            bar.inc(k as u64);
        }
        w.finish(&[
            ("source", source.to_string()),
            ("layout", "CHW".to_string()),
        ])?;
        let classes: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
        write_labels(file, &labels, Some(&classes))
    })?;
    bar.finish_and_clear();
    Ok(())
}
