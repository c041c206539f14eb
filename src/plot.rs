//! PNG line charts with a bundled font (no system fonts needed).

use anyhow::{anyhow, Context, Result};
use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in, so this cannot fail at run time unless the file is corrupt.
        assert!(
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok(),
            "bundled font is valid"
        );
    });
}

/// One named line: (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart of several lines.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_x: bool,
    pub log_y: bool,
}

/// The drawing area of a whole figure.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// Renders `draw` on a white canvas of `size` pixels and writes it to `path` as a PNG,
/// atomically ([`crate::output`]).
fn write_png(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    register_font();
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    crate::output::write_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        PngEncoder::new(&mut w).write_image(&rgb, size.0, size.1, ColorType::Rgb8)?;
        w.flush()?;
        Ok(())
    })
    .with_context(|| format!("cannot write plot {}", path.display()))
}

/// Draws panels side by side into a PNG.
pub fn line_panels(path: &Path, panels: &[Panel]) -> Result<()> {
    let width = 640 * panels.len().max(1) as u32;
    write_png(path, (width, 480), |root| {
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (panel, area) in panels.iter().zip(areas) {
            draw_panel(&area, panel)?;
        }
        Ok(())
    })
}

/// Log axes use plotters' log scale; values a log axis cannot show (<= 0) sit at 1e-12.
fn draw_panel(area: &Area, p: &Panel) -> Result<()> {
    let on_axis = |v: f64, log: bool| if log { v.max(1e-12) } else { v };
    let pts: Vec<(f64, f64)> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (on_axis(x, p.log_x), on_axis(y, p.log_y)))
        .collect();
    let (x0, x1) = axis_bounds(pts.iter().map(|q| q.0), p.log_x);
    let (y0, y1) = axis_bounds(pts.iter().map(|q| q.1), p.log_y);
    let lin = |a: f64, b: f64| RangedCoordf64::from(a..b);
    let log = |a: f64, b: f64| LogCoord::from((a..b).log_scale());
    match (p.log_x, p.log_y) {
        (false, false) => draw_lines(area, p, lin(x0, x1), lin(y0, y1)),
        (true, false) => draw_lines(area, p, log(x0, x1), lin(y0, y1)),
        (false, true) => draw_lines(area, p, lin(x0, x1), log(y0, y1)),
        (true, true) => draw_lines(area, p, log(x0, x1), log(y0, y1)),
    }
}

/// The panel's series on axes `x` and `y` (linear or log).
fn draw_lines<X, Y>(area: &Area, p: &Panel, x: X, y: Y) -> Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let on_axis = |v: f64, log: bool| if log { v.max(1e-12) } else { v };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)?;
    let desc = |label: &str, log: bool| {
        if log {
            format!("{label} (log)")
        } else {
            label.to_string()
        }
    };
    let fmt = |v: &f64| crate::report::fmt3(*v);
    chart
        .configure_mesh()
        .x_desc(desc(&p.x_label, p.log_x))
        .y_desc(desc(&p.y_label, p.log_y))
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .draw()
        .map_err(plot_err)?;
    for (i, s) in p.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (on_axis(x, p.log_x), on_axis(y, p.log_y)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(line.into_iter().map(|q| Circle::new(q, 3, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// The range of `vals` with 5% padding, taken in log10 space on a log axis.
fn axis_bounds(vals: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    if !log {
        return bounds(vals);
    }
    let (lo, hi) = bounds(vals.map(f64::log10));
    (10f64.powf(lo), 10f64.powf(hi))
}

fn bounds(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// One chart of many unlabelled paths (e.g. sampling trajectories), all in one colour per panel.
pub struct PathPanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub paths: Vec<Vec<(f64, f64)>>,
}

/// Draws path panels side by side into a PNG, y growing downwards (t = 0 on top, as the
/// paper's Figure 1 puts the data above the noise). All panels share the x range.
pub fn path_panels(path: &Path, panels: &[PathPanel]) -> Result<()> {
    let width = 360 * panels.len().max(1) as u32;
    write_png(path, (width, 480), |root| draw_paths(root, panels))
}

fn draw_paths(root: &Area, panels: &[PathPanel]) -> Result<()> {
    let all = || panels.iter().flat_map(|p| p.paths.iter().flatten());
    let (x0, x1) = bounds(all().map(|q| q.0).filter(|v| v.is_finite()));
    let (y0, y1) = bounds(all().map(|q| q.1).filter(|v| v.is_finite()));
    for (p, area) in panels
        .iter()
        .zip(root.split_evenly((1, panels.len().max(1))))
    {
        let mut chart = ChartBuilder::on(&area)
            .caption(&p.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, y1..y0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(p.x_label.as_str())
            .y_desc(p.y_label.as_str())
            .draw()
            .map_err(plot_err)?;
        let color = RGBColor(200, 30, 60);
        for line in &p.paths {
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(1)))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}
