//! PNG line charts with a bundled font (no system fonts needed).
//!
//! Every colour reads on white (WCAG contrast at least 3:1), every line also has its own marker
//! (so it survives greyscale printing), the legend sits in a margin right of the panels (it
//! never covers a line), tick marks point outwards with the labels beyond them, and an axis can
//! tick exactly at the values a table used (its step counts).

use anyhow::{anyhow, Context, Result};
use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::CoordTranslate;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::io::Write;
use std::ops::Range;
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

/// A horizontal reference line across the whole panel, dashed: a baseline or the noise floor.
pub struct Level {
    pub label: String,
    pub y: f64,
}

/// One chart of several lines.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub levels: Vec<Level>,
    /// Ticks of the x axis exactly at these values (the step counts or budgets a table used);
    /// `None`: the scale's own ticks.
    pub x_ticks: Option<Vec<f64>>,
    pub log_x: bool,
    pub log_y: bool,
}

/// Series colours: Okabe & Ito's colour-blind-safe palette without its yellow, orange and sky
/// blue (under 3:1 contrast on white), then the darker half of Paul Tol's "muted" scheme.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x33, 0x22, 0x88), // indigo
    RGBColor(0x88, 0x22, 0x55), // wine
    RGBColor(0x11, 0x77, 0x33), // green
    RGBColor(0xAA, 0x44, 0x99), // purple
];

/// Colours and (dash, gap) lengths in pixels of the reference lines, in order.
pub const LEVEL_STYLES: [(RGBColor, u32, u32); 3] = [
    (RGBColor(0x00, 0x00, 0x00), 10, 5),
    (RGBColor(0x5F, 0x5F, 0x5F), 4, 4),
    (RGBColor(0x00, 0x00, 0x00), 2, 5),
];

/// Point markers, cycled with a period (9) prime to the palette's (8), so the first 72 series
/// differ in (colour, marker) and neighbours differ in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    OpenCircle,
    OpenSquare,
    Cross,
    Plus,
}

pub const MARKERS: [Marker; 9] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::OpenCircle,
    Marker::OpenSquare,
    Marker::Cross,
    Marker::Plus,
];

/// How the `i`th distinct series label of a figure is drawn.
pub fn series_style(i: usize) -> (RGBColor, Marker) {
    (PALETTE[i % PALETTE.len()], MARKERS[i % MARKERS.len()])
}

/// WCAG 2 contrast ratio of `c` against white (1 to 21).
pub fn contrast_on_white(c: RGBColor) -> f64 {
    let lin = |v: u8| {
        let s = v as f64 / 255.0;
        if s <= 0.04045 {
            s / 12.92
        } else {
            ((s + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2);
    1.05 / (l + 0.05)
}

/// A pixel rectangle of the whole figure, `x0..x1` by `y0..y1` (ends excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Rect {
    fn from_ranges((x, y): (Range<i32>, Range<i32>)) -> Self {
        Rect {
            x0: x.start,
            y0: y.start,
            x1: x.end,
            y1: y.end,
        }
    }

    pub fn intersects(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    pub fn inside(&self, size: (u32, u32)) -> bool {
        self.x0 >= 0 && self.y0 >= 0 && self.x1 <= size.0 as i32 && self.y1 <= size.1 as i32
    }
}

/// Where a figure's parts landed: what the tests check instead of pixels.
#[derive(Debug)]
pub struct Layout {
    pub size: (u32, u32),
    /// Each panel's plotting area (inside the axes).
    pub plotting: Vec<Rect>,
    /// The legend box, if any line has a label.
    pub legend: Option<Rect>,
    /// Each panel's x-axis ticks (labelled values).
    pub x_ticks: Vec<Vec<f64>>,
}

/// Size of one line chart, legend excluded.
pub const PANEL: (u32, u32) = (560, 480);
/// Outward tick length in pixels; plotters puts a label twice this far from the axis.
const TICK: i32 = 5;
const TICK_FONT: u32 = 13;
const DESC_FONT: u32 = 14;
const LEGEND_FONT: u32 = 14;
/// Legend geometry: its top edge, inner padding, row height and the sample line's length.
const LEGEND_TOP: i32 = 40;
const LEGEND_PAD: i32 = 8;
const LEGEND_ROW: i32 = 20;
const LEGEND_SWATCH: i32 = 30;

/// The drawing area of a whole figure.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// Width and height in pixels of `text` in the bundled font at `px`.
fn text_size(text: &str, px: u32) -> (i32, i32) {
    register_font();
    ("sans-serif", px)
        .into_font()
        .box_size(text)
        .map_or((0, 0), |(w, h)| (w as i32, h as i32))
}

/// Renders `draw` on a white canvas of `size` pixels; returns the RGB bytes and what `draw`
/// returns.
fn render<T>(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<T>) -> Result<(Vec<u8>, T)> {
    register_font();
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    let out = {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let out = draw(&root)?;
        root.present().map_err(plot_err)?;
        out
    };
    Ok((rgb, out))
}

/// Writes RGB bytes as a PNG at `path`, atomically ([`crate::output`]).
fn save_png(path: &Path, size: (u32, u32), rgb: &[u8]) -> Result<()> {
    crate::output::write_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        PngEncoder::new(&mut w).write_image(rgb, size.0, size.1, ColorType::Rgb8)?;
        w.flush()?;
        Ok(())
    })
    .with_context(|| format!("cannot write plot {}", path.display()))
}

/// One legend row: a series (line and marker) or a reference level (dashed line).
enum Key {
    Line(RGBColor, Marker),
    Level(RGBColor, u32, u32),
}

/// The figure's legend: every distinct series label (in order of first appearance) with its
/// style, then every distinct level label.
fn legend_entries(panels: &[Panel]) -> Vec<(String, Key)> {
    let mut series: Vec<&str> = Vec::new();
    let mut levels: Vec<&str> = Vec::new();
    for p in panels {
        for s in &p.series {
            if !series.contains(&s.label.as_str()) {
                series.push(&s.label);
            }
        }
        for l in &p.levels {
            if !levels.contains(&l.label.as_str()) {
                levels.push(&l.label);
            }
        }
    }
    let lines = series.iter().enumerate().map(|(i, l)| {
        let (c, m) = series_style(i);
        (l.to_string(), Key::Line(c, m))
    });
    let dashed = levels.iter().enumerate().map(|(j, l)| {
        let (c, d, g) = LEVEL_STYLES[j % LEVEL_STYLES.len()];
        (l.to_string(), Key::Level(c, d, g))
    });
    lines.chain(dashed).collect()
}

/// The legend's size: as wide as its longest label, one row per entry; (0, 0) when empty.
fn legend_size(labels: &[String]) -> (i32, i32) {
    if labels.is_empty() {
        return (0, 0);
    }
    let text = labels
        .iter()
        .map(|l| text_size(l, LEGEND_FONT).0)
        .max()
        .unwrap_or(0);
    (
        3 * LEGEND_PAD + LEGEND_SWATCH + text + LEGEND_PAD,
        2 * LEGEND_PAD + LEGEND_ROW * labels.len() as i32,
    )
}

/// The figure's size: the panels side by side, the legend in a margin on their right, tall
/// enough for both.
pub fn figure_size(panels: &[Panel]) -> (u32, u32) {
    let labels: Vec<String> = legend_entries(panels).into_iter().map(|e| e.0).collect();
    let (w, h) = legend_margin(&labels);
    (PANEL.0 * panels.len().max(1) as u32 + w, PANEL.1.max(h))
}

/// The room a legend of `labels` takes right of the panels: its width plus a gap, and the
/// figure height it needs; (0, 0) without labels.
pub fn legend_margin(labels: &[String]) -> (u32, u32) {
    match legend_size(labels) {
        (0, _) => (0, 0),
        (w, h) => (
            (w + LEGEND_PAD) as u32,
            (LEGEND_TOP + h + LEGEND_PAD) as u32,
        ),
    }
}

/// Draws panels side by side, with one legend on their right, into a PNG.
pub fn line_panels(path: &Path, panels: &[Panel]) -> Result<Layout> {
    let size = figure_size(panels);
    let (rgb, layout) = render(size, |root| draw_line_panels(root, panels))?;
    save_png(path, size, &rgb)?;
    Ok(layout)
}

fn draw_line_panels(root: &Area, panels: &[Panel]) -> Result<Layout> {
    let size = root.dim_in_pixel();
    let charts_w = PANEL.0 * panels.len().max(1) as u32;
    let (charts, legend_area) = root.split_horizontally(charts_w);
    let mut layout = Layout {
        size,
        plotting: Vec::new(),
        legend: None,
        x_ticks: Vec::new(),
    };
    let entries = legend_entries(panels);
    let cols = charts.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(cols) {
        let (plotting, ticks) = draw_panel(&area, panel, &entries)?;
        layout.plotting.push(plotting);
        layout.x_ticks.push(ticks);
    }
    if !entries.is_empty() {
        let labels: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
        let (w, h) = legend_size(&labels);
        let x0 = charts_w as i32;
        layout.legend = Some(Rect {
            x0,
            y0: LEGEND_TOP,
            x1: x0 + w,
            y1: LEGEND_TOP + h,
        });
        draw_legend(&legend_area, &entries, (w, h))?;
    }
    Ok(layout)
}

/// The legend box at the top left of `area` (a margin right of the panels).
fn draw_legend(area: &Area, entries: &[(String, Key)], (w, h): (i32, i32)) -> Result<()> {
    let frame = [(0, LEGEND_TOP), (w - 1, LEGEND_TOP + h - 1)];
    area.draw(&Rectangle::new(frame, RGBColor(0x99, 0x99, 0x99)))
        .map_err(plot_err)?;
    let font = ("sans-serif", LEGEND_FONT).into_font().color(&BLACK).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ),
    );
    for (i, (label, key)) in entries.iter().enumerate() {
        let y = LEGEND_TOP + LEGEND_PAD + LEGEND_ROW * i as i32 + LEGEND_ROW / 2;
        let (a, b) = (LEGEND_PAD, LEGEND_PAD + LEGEND_SWATCH);
        match *key {
            Key::Line(c, m) => {
                area.draw(&PathElement::new(vec![(a, y), (b, y)], c.stroke_width(2)))
                    .map_err(plot_err)?;
                draw_marker(area, m, ((a + b) / 2, y), c)?;
            }
            Key::Level(c, dash, gap) => {
                area.draw(&DashedPathElement::new(
                    vec![(a, y), (b, y)],
                    dash,
                    gap,
                    c.stroke_width(2),
                ))
                .map_err(plot_err)?;
            }
        }
        area.draw_text(label, &font, (b + 2 * LEGEND_PAD, y))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Draws a marker centred on `at` (data coordinates of `area`), about 10 pixels across.
fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    m: Marker,
    at: CT::From,
    c: RGBColor,
) -> Result<()>
where
    CT::From: Clone,
{
    let (fill, line) = (c.filled(), c.stroke_width(2));
    let at = || EmptyElement::at(at.clone());
    let drawn = match m {
        Marker::Circle => area.draw(&(at() + Circle::new((0, 0), 4, fill))),
        Marker::Square => area.draw(&(at() + Rectangle::new([(-4, -4), (4, 4)], fill))),
        Marker::TriangleUp => {
            area.draw(&(at() + Polygon::new(vec![(0, -5), (5, 4), (-5, 4)], fill)))
        }
        Marker::Diamond => {
            area.draw(&(at() + Polygon::new(vec![(0, -5), (5, 0), (0, 5), (-5, 0)], fill)))
        }
        Marker::TriangleDown => {
            area.draw(&(at() + Polygon::new(vec![(0, 5), (5, -4), (-5, -4)], fill)))
        }
        Marker::OpenCircle => area.draw(&(at() + Circle::new((0, 0), 4, line))),
        Marker::OpenSquare => area.draw(&(at() + Rectangle::new([(-4, -4), (4, 4)], line))),
        Marker::Cross => area.draw(&(at() + Cross::new((0, 0), 4, line))),
        Marker::Plus => area.draw(
            &(at()
                + PathElement::new(vec![(-5, 0), (5, 0)], line)
                + PathElement::new(vec![(0, -5), (0, 5)], line)),
        ),
    };
    drawn.map_err(plot_err)
}

/// An axis, linear or log, ticked at given values or where its scale puts ticks.
struct Axis {
    scale: Scale,
    ticks: Option<Vec<f64>>,
}

enum Scale {
    Lin(RangedCoordf64),
    Log(LogCoord<f64>),
}

impl Axis {
    /// `lo..hi` (reversed when `lo > hi`), ticked at the `ticks` inside it if given.
    fn new(lo: f64, hi: f64, log: bool, ticks: Option<&[f64]>) -> Self {
        let scale = match log {
            true => Scale::Log(LogCoord::from((lo..hi).log_scale())),
            false => Scale::Lin(RangedCoordf64::from(lo..hi)),
        };
        let (a, b) = (lo.min(hi), lo.max(hi));
        let ticks = ticks.map(|t| t.iter().copied().filter(|v| (a..=b).contains(v)).collect());
        Axis { scale, ticks }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        match &self.scale {
            Scale::Lin(s) => s.map(v, limit),
            Scale::Log(s) => s.map(v, limit),
        }
    }

    /// The given ticks as the bold (labelled) points and no light ones; else the scale's.
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match (&self.ticks, &self.scale) {
            (Some(t), _) if !hint.weight().allow_light_points() => t.clone(),
            (Some(_), _) => Vec::new(),
            (None, Scale::Lin(s)) => s.key_points(hint),
            (None, Scale::Log(s)) => s.key_points(hint),
        }
    }

    fn range(&self) -> Range<f64> {
        match &self.scale {
            Scale::Lin(s) => s.range(),
            Scale::Log(s) => s.range(),
        }
    }
}

/// A tick label: three significant digits without trailing zeros (`1`, `0.25`, `1e-4`), so
/// step counts read as the integers they are.
pub fn tick_label(v: f64) -> String {
    let s = crate::report::fmt3(v);
    let trim = |m: &str| -> String {
        match m.contains('.') {
            true => m.trim_end_matches('0').trim_end_matches('.').to_string(),
            false => m.to_string(),
        }
    };
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", trim(m)),
        None => trim(&s),
    }
}

/// Labels that many bold ticks an axis is asked for (plotters' default).
const BOLD_TICKS: usize = 10;

/// Width of the y label area: the tick, the gap plotters leaves, the widest tick label, then
/// the rotated axis description.
fn y_label_area(axis: &Axis) -> i32 {
    let widest = axis
        .key_points(plotters::coord::ranged1d::BoldPoints(BOLD_TICKS))
        .iter()
        .map(|&v| text_size(&tick_label(v), TICK_FONT).0)
        .max()
        .unwrap_or(0);
    2 * TICK + widest + 8 + text_size("Ag", DESC_FONT).1 + 6
}

/// Height of the x label area: the tick, the gap, a label, then the axis description.
fn x_label_area() -> i32 {
    2 * TICK + text_size("0", TICK_FONT).1 + 10 + text_size("Ag", DESC_FONT).1 + 4
}

/// A chart on `area` with axes `x`, `y`: outward ticks, labels beyond them, a light grid.
fn chart_on<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    (x, y): (Axis, Axis),
    (x_desc, y_desc): (&str, &str),
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<Axis, Axis>>> {
    let y_area = y_label_area(&y);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(20)
        .x_label_area_size(x_label_area())
        .y_label_area_size(y_area)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .set_all_tick_mark_size(TICK)
        .x_labels(BOLD_TICKS)
        .y_labels(BOLD_TICKS)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", TICK_FONT))
        .axis_desc_style(("sans-serif", DESC_FONT))
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .bold_line_style(RGBColor(0xCC, 0xCC, 0xCC))
        .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

/// One panel's lines (each with its markers) and levels; returns its plotting area and its
/// x ticks. Log axes use plotters' log scale; values a log axis cannot show (<= 0) sit at
/// 1e-12.
fn draw_panel(area: &Area, p: &Panel, keys: &[(String, Key)]) -> Result<(Rect, Vec<f64>)> {
    let on_axis = |v: f64, log: bool| if log { v.max(1e-12) } else { v };
    let lines: Vec<Vec<(f64, f64)>> = p
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (on_axis(x, p.log_x), on_axis(y, p.log_y)))
                .collect()
        })
        .collect();
    let xs = lines
        .iter()
        .flatten()
        .map(|q| q.0)
        .chain(p.x_ticks.iter().flatten().map(|&v| on_axis(v, p.log_x)));
    let levels: Vec<(&Level, f64)> = p
        .levels
        .iter()
        .map(|l| (l, on_axis(l.y, p.log_y)))
        .filter(|(_, y)| y.is_finite())
        .collect();
    let ys = lines
        .iter()
        .flatten()
        .map(|q| q.1)
        .chain(levels.iter().map(|l| l.1));
    let (x0, x1) = axis_bounds(xs, p.log_x);
    let (y0, y1) = axis_bounds(ys, p.log_y);
    let x = Axis::new(x0, x1, p.log_x, p.x_ticks.as_deref());
    let y = Axis::new(y0, y1, p.log_y, None);
    let desc = |label: &str, log: bool| match log {
        true => format!("{label} (log)"),
        false => label.to_string(),
    };
    let (xd, yd) = (desc(&p.x_label, p.log_x), desc(&p.y_label, p.log_y));
    let mut chart = chart_on(area, &p.title, (x, y), (&xd, &yd))?;
    let ticks = chart
        .as_coord_spec()
        .x_spec()
        .key_points(plotters::coord::ranged1d::BoldPoints(BOLD_TICKS));
    // Styles come from the figure's legend, so a label looks the same in every panel.
    let key = |label: &str| keys.iter().find(|k| k.0 == label).map(|k| &k.1);
    for (s, line) in p.series.iter().zip(lines) {
        let Some(&Key::Line(color, m)) = key(&s.label) else {
            continue;
        };
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(plot_err)?;
        for q in line {
            draw_marker(chart.plotting_area(), m, q, color)?;
        }
    }
    for (l, y) in levels {
        let Some(&Key::Level(color, dash, gap)) = key(&l.label) else {
            continue;
        };
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, y), (x1, y)],
                dash,
                gap,
                color.stroke_width(2),
            ))
            .map_err(plot_err)?;
    }
    let plotting = Rect::from_ranges(chart.plotting_area().get_pixel_range());
    Ok((plotting, ticks))
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
    let size = (360 * panels.len().max(1) as u32, 480);
    let (rgb, ()) = render(size, |root| draw_paths(root, panels))?;
    save_png(path, size, &rgb)
}

fn draw_paths(root: &Area, panels: &[PathPanel]) -> Result<()> {
    let all = || panels.iter().flat_map(|p| p.paths.iter().flatten());
    let (x0, x1) = bounds(all().map(|q| q.0).filter(|v| v.is_finite()));
    let (y0, y1) = bounds(all().map(|q| q.1).filter(|v| v.is_finite()));
    for (p, area) in panels
        .iter()
        .zip(root.split_evenly((1, panels.len().max(1))))
    {
        let axes = (
            Axis::new(x0, x1, false, None),
            Axis::new(y1, y0, false, None),
        );
        let mut chart = chart_on(&area, &p.title, axes, (&p.x_label, &p.y_label))?;
        for line in &p.paths {
            chart
                .draw_series(LineSeries::new(line.clone(), PALETTE[0].stroke_width(1)))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(title: &str, steps: &[f64], labels: &[&str]) -> Panel {
        Panel {
            title: title.into(),
            x_label: "student steps".into(),
            y_label: "FD".into(),
            // Lines through the top right corner, where a legend inside the chart would sit.
            series: labels
                .iter()
                .enumerate()
                .map(|(i, l)| Series {
                    label: l.to_string(),
                    points: steps
                        .iter()
                        .map(|&s| (s, 10.0 * (i + 1) as f64 * s))
                        .collect(),
                })
                .collect(),
            levels: vec![Level {
                label: "floor".into(),
                y: 0.01,
            }],
            x_ticks: Some(steps.to_vec()),
            log_x: true,
            log_y: true,
        }
    }

    fn layout(panels: &[Panel]) -> Layout {
        render(figure_size(panels), |root| draw_line_panels(root, panels))
            .unwrap()
            .1
    }

    #[test]
    fn a_step_axis_ticks_exactly_at_the_steps_used() {
        let steps = [1.0, 2.0, 4.0, 8.0];
        let nfe = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
        let l = layout(&[panel("a", &steps, &["CD"]), panel("b", &nfe, &["CD"])]);
        assert_eq!(l.x_ticks, [steps.to_vec(), nfe.to_vec()]);
        let labels: Vec<String> = nfe.iter().map(|&v| tick_label(v)).collect();
        assert_eq!(labels, ["1", "2", "4", "8", "16", "32", "64"]);
        // Without given ticks the log scale ticks elsewhere (at 3, 5, ... between 1 and 8).
        let own = Axis::new(0.9, 9.0, true, None)
            .key_points(plotters::coord::ranged1d::BoldPoints(BOLD_TICKS));
        assert_ne!(own, steps);
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(0.0001), "1e-4");
        assert_eq!(tick_label(12345.0), "1.23e4");
    }

    #[test]
    fn every_colour_reads_on_white() {
        // The WCAG formula's ends and a known grey, then Okabe-Ito's yellow, which fails.
        assert!((contrast_on_white(RGBColor(0, 0, 0)) - 21.0).abs() < 1e-9);
        assert!((contrast_on_white(RGBColor(255, 255, 255)) - 1.0).abs() < 1e-9);
        assert!((contrast_on_white(RGBColor(0x76, 0x76, 0x76)) - 4.54).abs() < 0.01);
        assert!(contrast_on_white(RGBColor(0xF0, 0xE4, 0x42)) < 3.0);
        let levels = LEVEL_STYLES.iter().map(|l| l.0);
        for c in PALETTE.iter().copied().chain(levels) {
            let r = contrast_on_white(c);
            assert!(r >= 3.0, "{c:?}: contrast {r:.2} on white");
        }
    }

    #[test]
    fn series_differ_in_colour_and_marker() {
        let styles: Vec<(RGBColor, Marker)> = (0..72).map(series_style).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert!(a != b, "{a:?} repeats within 72 series");
            }
        }
        for w in styles.windows(2) {
            assert!(w[0].0 != w[1].0 && w[0].1 != w[1].1, "{w:?}");
        }
    }

    #[test]
    fn the_legend_sits_outside_every_plotting_area() {
        let many: Vec<String> = (0..14)
            .map(|i| format!("integrator {i} with a long label"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for panels in [
            vec![panel("one", &[1.0, 2.0], &["CT", "CD"])],
            vec![
                panel("a", &[1.0, 2.0, 4.0], &many),
                panel("b", &[1.0, 2.0, 4.0], &many),
            ],
        ] {
            let l = layout(&panels);
            let legend = l.legend.expect("labelled lines have a legend");
            assert!(legend.inside(l.size), "{legend:?} outside {:?}", l.size);
            assert_eq!(l.plotting.len(), panels.len());
            for p in &l.plotting {
                assert!(p.inside(l.size), "{p:?}");
                assert!(!legend.intersects(p), "legend {legend:?} covers {p:?}");
            }
            // As wide as its longest label, one row per distinct label (+ the floor).
            let longest = longest_label(&panels);
            assert!(legend.x1 - legend.x0 > text_size(&longest, LEGEND_FONT).0);
            let rows = panels[0].series.len() as i32 + 1;
            assert_eq!(legend.y1 - legend.y0, 2 * LEGEND_PAD + rows * LEGEND_ROW);
        }
        let bare = Panel {
            levels: vec![],
            ..panel("none", &[1.0], &[])
        };
        assert!(layout(&[bare]).legend.is_none());
    }

    /// The longest series label of a figure.
    fn longest_label(panels: &[Panel]) -> String {
        let labels = panels
            .iter()
            .flat_map(|p| p.series.iter().map(|s| &s.label));
        labels.max_by_key(|l| l.len()).cloned().unwrap_or_default()
    }

    #[test]
    fn the_png_has_the_figure_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let panels = [
            panel("a", &[1.0, 2.0], &["CT"]),
            panel("b", &[1.0], &["CD"]),
        ];
        let l = line_panels(&path, &panels).unwrap();
        let png = image::open(&path).unwrap();
        assert_eq!((png.width(), png.height()), l.size);
        assert_eq!(l.size, figure_size(&panels));
        assert!(l.size.0 > 2 * PANEL.0);
    }
}
