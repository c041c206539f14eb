//! PNG line charts with a bundled font (no system fonts needed).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
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

/// Draws panels side by side into a PNG.
pub fn line_panels(path: &Path, panels: &[Panel]) -> Result<()> {
    register_font();
    let width = 640 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas) {
        draw_panel(&area, panel)?;
    }
    root.present()
        .map_err(|e| anyhow!("cannot write plot {}: {e}", path.display()))?;
    Ok(())
}

fn draw_panel(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>, p: &Panel) -> Result<()> {
    let tf = |v: f64, log: bool| if log { v.max(1e-12).log10() } else { v };
    let pts: Vec<(f64, f64)> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (x0, x1) = bounds(pts.iter().map(|q| tf(q.0, p.log_x)));
    let (y0, y1) = bounds(pts.iter().map(|q| tf(q.1, p.log_y)));
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| anyhow!("plot: {e}"))?;
    let fmt = |log: bool| {
        move |v: &f64| {
            if log {
                crate::report::fmt3(10f64.powf(*v))
            } else {
                crate::report::fmt3(*v)
            }
        }
    };
    chart
        .configure_mesh()
        .x_desc(if p.log_x {
            format!("{} (log)", p.x_label)
        } else {
            p.x_label.clone()
        })
        .y_desc(if p.log_y {
            format!("{} (log)", p.y_label)
        } else {
            p.y_label.clone()
        })
        .x_label_formatter(&fmt(p.log_x))
        .y_label_formatter(&fmt(p.log_y))
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    for (i, s) in p.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (tf(x, p.log_x), tf(y, p.log_y)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("plot: {e}"))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(line.into_iter().map(|q| Circle::new(q, 3, color.filled())))
            .map_err(|e| anyhow!("plot: {e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
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
    register_font();
    let width = 360 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
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
            .map_err(|e| anyhow!("plot: {e}"))?;
        chart
            .configure_mesh()
            .x_desc(p.x_label.as_str())
            .y_desc(p.y_label.as_str())
            .draw()
            .map_err(|e| anyhow!("plot: {e}"))?;
        let color = RGBColor(200, 30, 60);
        for line in &p.paths {
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(1)))
                .map_err(|e| anyhow!("plot: {e}"))?;
        }
    }
    root.present()
        .map_err(|e| anyhow!("cannot write plot {}: {e}", path.display()))?;
    Ok(())
}
