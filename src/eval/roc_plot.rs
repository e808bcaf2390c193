//! ROC curves drawn as a PNG that a person wants to look at: log-FAR x axis, grid, labelled axes,
//! title and legend, one distinct colour/line style per curve. Text is rendered with the DejaVu
//! Sans font bundled by the `dejavu` crate (registered once with plotters' ab_glyph support), so no
//! system font or fontconfig is needed. This module owns only the rendering; the curves come from
//! [`super::metrics::roc_curve`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::metrics::RocPoint;

/// Image size in pixels (width, height).
const SIZE: (u32, u32) = (1200, 900);
/// Lowest FAR on the axis; FAR values below it (including 0) are drawn at it.
const FAR_MIN: f64 = 1e-4;
/// Outer margin of the plot and legend, in pixels.
const MARGIN: i32 = 24;
/// Legend text size in pixels when the rows have room for it.
const LEGEND_FONT_PX: f64 = 20.0;
/// Font family name (plotters' generic sans-serif, process-wide) under which the bundled DejaVu Sans is registered.
const FONT: &str = "sans-serif";
/// Tableau 10: distinct, colour-blind-friendlier hues. Curve `i` gets `PALETTE[i % 10]`.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type BackendError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

/// One labelled ROC curve to draw.
#[derive(Debug, Clone)]
pub struct Curve<'a> {
    /// Legend text, e.g. `"crop 14px bicubic (AUC 0.812)"`.
    pub label: String,
    /// Operating points, joined by straight segments in the given order; the order of
    /// [`super::metrics::roc_curve`] (increasing FAR) gives a proper curve. Points with a
    /// non-finite rate are skipped.
    pub points: &'a [RocPoint],
}

/// Why a ROC plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters rejected the bundled DejaVu Sans font (its `InvalidFont` carries no detail).
    #[error("the bundled DejaVu Sans font could not be registered with plotters")]
    Font,
    /// Drawing or encoding/writing the PNG failed.
    #[error("drawing ROC plot {}", path.display())]
    Draw {
        /// The PNG being written.
        path: PathBuf,
        /// The plotters error (bitmap backend: I/O or PNG encoding, layout, ...).
        #[source]
        source: DrawingAreaErrorKind<BackendError>,
    },
}

/// Writes `curves` as a 1200×900 PNG at `path` (overwriting it): white background, x = FAR on a
/// log axis from 1e-4 to 1 (FAR below 1e-4, including 0, is clamped to 1e-4), y = TAR from 0 to
/// 1, grid, axis labels, `title`, a dashed grey chance line, and a legend with one entry per
/// curve. Curves get 10 distinct colours, solid; curves 11–20 reuse them dashed, 21–30 thin, and
/// the cycle repeats after 30 (legible up to ~30 curves; the legend shrinks its rows to fit).
///
/// `path` should end in `.png`: the encoder picks the format from the extension. Labels wider than
/// half the image are clipped. An empty `curves` gives the axes alone. Errors: [`PlotError::Font`] if the font cannot be
/// registered, [`PlotError::Draw`] if drawing fails or the file cannot be written (e.g. its
/// directory does not exist).
pub fn write_roc_png(path: &Path, title: &str, curves: &[Curve]) -> Result<(), PlotError> {
    register_fonts()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(&root, title, curves)
        .and_then(|()| root.present())
        .map_err(|source| PlotError::Draw { path: path.to_path_buf(), source })
}

fn register_fonts() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Line style of curve `index`: palette colour, then solid / dashed / thin by palette cycle.
fn curve_style(index: usize) -> (ShapeStyle, bool) {
    let colour = PALETTE[index % PALETTE.len()];
    match (index / PALETTE.len()) % 3 {
        0 => (colour.stroke_width(3), false),
        1 => (colour.stroke_width(3), true),
        _ => (colour.stroke_width(1), false),
    }
}

fn axis_label(far: &f64) -> String {
    // Only decades are labelled; plain decimals ("0.001") read best.
    let decimals = (-far.log10().round()).max(0.0) as usize;
    format!("{far:.decimals$}")
}

type DrawResult = Result<(), DrawingAreaErrorKind<BackendError>>;

fn draw(root: &DrawingArea<BitMapBackend<'_>, Shift>, title: &str, curves: &[Curve]) -> DrawResult {
    root.fill(&WHITE)?;
    let root = root.margin(12, 0, 0, 0).titled(title, (FONT, 34, FontStyle::Bold).into_font().color(&BLACK))?;

    // The legend sits right of the plot so that it never hides a curve.
    let label_font = legend_font(LEGEND_FONT_PX);
    let mut widest = 0;
    for curve in curves {
        widest = widest.max(root.estimate_text_size(&curve.label, &label_font)?.0);
    }
    let legend_width = if curves.is_empty() { 0 } else { (widest + 90).min(SIZE.0 / 2) };
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - legend_width);

    let decades = [1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let minor = decades[..4].iter().flat_map(|d| (2..10).map(move |k| d * f64::from(k)));
    let x_axis = (FAR_MIN..1.0).log_scale().with_key_points(decades.to_vec()).with_light_points(minor);
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(MARGIN)
        .x_label_area_size(80)
        .y_label_area_size(100)
        .build_cartesian_2d(x_axis, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("False accept rate (log)")
        .y_desc("True accept rate")
        .axis_desc_style((FONT, 26).into_font().color(&BLACK))
        .label_style((FONT, 22).into_font().color(&BLACK))
        .x_label_formatter(&axis_label)
        .y_labels(11)
        .y_max_light_lines(1)
        .y_label_formatter(&|tar| format!("{tar:.1}"))
        .bold_line_style(RGBColor(190, 190, 190).stroke_width(1))
        .light_line_style(RGBColor(232, 232, 232).stroke_width(1))
        .axis_style(BLACK.stroke_width(2))
        .draw()?;

    let chance = (0..=100).map(|i| {
        let far = FAR_MIN.powf(1.0 - f64::from(i) / 100.0);
        (far, far)
    });
    chart.draw_series(DashedLineSeries::new(chance, 8, 6, RGBColor(150, 150, 150).stroke_width(2)))?;

    for (index, curve) in curves.iter().enumerate() {
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .filter(|p| p.far.is_finite() && p.tar.is_finite())
            .map(|p| (p.far.clamp(FAR_MIN, 1.0), p.tar.clamp(0.0, 1.0)))
            .collect();
        match curve_style(index) {
            (style, true) => chart.draw_series(DashedLineSeries::new(points, 14, 8, style))?,
            (style, false) => chart.draw_series(LineSeries::new(points, style))?,
        };
    }
    draw_legend(&legend_area, curves)
}

fn legend_font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// Pixel count as a coordinate; saturates (plot sizes are far below `i32::MAX`).
fn px<T: TryInto<i32>>(n: T) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// One row per curve (a line sample, then the label), boxed, top-aligned with the plot.
fn draw_legend(area: &DrawingArea<BitMapBackend<'_>, Shift>, curves: &[Curve]) -> DrawResult {
    if curves.is_empty() {
        return Ok(());
    }
    let (width, height) = area.dim_in_pixel();
    let n = px(curves.len());
    // Rows (and the text with them) shrink only when the curves would not fit otherwise.
    let row = ((px(height) - 2 * MARGIN - 80) / n).clamp(8, 32);
    let size = LEGEND_FONT_PX.min(f64::from(row) * 0.75);
    let font = legend_font(size).pos(Pos::new(HPos::Left, VPos::Center));
    let frame = [(0, MARGIN), (px(width) - MARGIN, MARGIN + row * n + 16)];
    area.draw(&Rectangle::new(frame, BLACK.stroke_width(1)))?;
    for (index, curve) in curves.iter().enumerate() {
        let y = MARGIN + 8 + row / 2 + row * px(index);
        let (style, dashed) = curve_style(index);
        let (first_end, second_start) = if dashed { (24, 36) } else { (30, 30) };
        area.draw(&PathElement::new(vec![(12, y), (first_end, y)], style))?;
        area.draw(&PathElement::new(vec![(second_start, y), (48, y)], style))?;
        area.draw_text(&curve.label, &font, (60, y))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::metrics::roc_curve;
    use super::*;

    #[test]
    fn writes_a_legible_png() {
        let good_g: Vec<f64> = (0..200).map(|i| 0.3 + 0.6 * f64::from(i) / 200.0).collect();
        let imp: Vec<f64> = (0..300).map(|i| -0.2 + 0.6 * f64::from(i) / 300.0).collect();
        let weak_g: Vec<f64> = (0..200).map(|i| -0.1 + 0.6 * f64::from(i) / 200.0).collect();
        let (good, weak) = (roc_curve(&good_g, &imp), roc_curve(&weak_g, &imp));
        let curves = [
            Curve { label: "crop 112px (AUC 0.971)".into(), points: &good },
            Curve { label: "crop 14px bicubic (AUC 0.812)".into(), points: &weak },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roc.png");
        write_roc_png(&path, "ROC: LFW pairs, 112px vs 14px", &curves).unwrap();

        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        let first = *img.get_pixel(0, 0);
        assert_eq!(first, image::Rgb([255, 255, 255]));
        assert!(img.pixels().any(|p| *p != first));
        // Both curve colours appear.
        for c in &PALETTE[..2] {
            assert!(img.pixels().any(|p| p.0 == [c.0, c.1, c.2]));
        }
    }

    #[test]
    fn missing_directory_is_a_draw_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/roc.png");
        let err = write_roc_png(&path, "t", &[]).unwrap_err();
        assert!(matches!(err, PlotError::Draw { .. }), "{err}");
    }
}
