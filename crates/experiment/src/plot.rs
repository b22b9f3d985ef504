//! PNG plots of an experiment with plotters: held-out loss against training FLOPs (the paper's
//! figure) and against wall-clock time, one line per method and seed, the scratch target drawn.
//!
//! Text is drawn with the bundled DejaVu Sans (assets/fonts) through plotters' `ab_glyph`
//! backend, so no system font library is needed.

use crate::ExperimentError;
use crate::plan::Method;
use crate::summary::{Point, SettingSummary, Summary};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// What drawing a plot can fail with (plotters' backend errors).
type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn register_font() -> Result<(), ExperimentError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font("sans-serif", style, FONT).is_err() {
                result = Err(ExperimentError::Font);
            }
        }
    });
    result
}

/// A method's line colour (colour-blind-safe Okabe-Ito palette), fixed per method so that a
/// method has the same colour in every plot.
fn colour(m: Method) -> RGBColor {
    match m {
        Method::Scratch => RGBColor(0, 0, 0),
        Method::DirectCopy => RGBColor(230, 159, 0),
        Method::StackBert => RGBColor(86, 180, 233),
        Method::Fpi => RGBColor(0, 158, 115),
        Method::Exact => RGBColor(204, 121, 167),
        Method::Aki => RGBColor(0, 114, 178),
        Method::Bert2Bert => RGBColor(213, 94, 0),
    }
}

/// Writes `loss_vs_flops_<setting>.png` and `loss_vs_time_<setting>.png` into `out`.
pub fn plots(summary: &Summary, out: &Path) -> Result<(), ExperimentError> {
    register_font()?;
    let drawn = |path: &Path, r: DrawResult| {
        r.map_err(|source| ExperimentError::Plot {
            path: path.to_owned(),
            source,
        })
    };
    for set in &summary.settings {
        if set.methods.iter().all(|m| m.runs.is_empty()) {
            continue;
        }
        let p = out.join(format!("loss_vs_flops_{}.png", set.name));
        drawn(&p, draw(set, &p, Axis::Flops))?;
        let p = out.join(format!("loss_vs_time_{}.png", set.name));
        drawn(&p, draw(set, &p, Axis::Time))?;
        if set.iso_levels.len() > 1 {
            let p = out.join(format!("iso_loss_{}.png", set.name));
            drawn(&p, draw_iso(set, &p))?;
        }
    }
    Ok(())
}

/// FLOPs each method needs to reach each loss level from the source's start down to scratch's
/// final loss (mean over seeds, bars from the fastest to the slowest seed): iso-loss curves.
fn draw_iso(set: &SettingSummary, path: &Path) -> DrawResult {
    let levels = &set.iso_levels;
    let (lo, hi) = (levels[levels.len() - 1], levels[0]);
    let f_max = set
        .methods
        .iter()
        .flat_map(|m| m.iso_flops.iter().filter_map(|a| a.max))
        .fold(0.0, f64::max);
    let e = if f_max > 0.0 {
        f_max.log10().floor() as i32
    } else {
        0
    };
    let scale = 10f64.powi(e);
    let y_hi = (f_max / scale).max(1e-9) * 1.05;
    let pad = 0.03 * (hi - lo);
    let root = BitMapBackend::new(path, (1100, 750)).into_drawing_area();
    root.fill(&WHITE)?;
    let (area, foot) = root.split_vertically(725);
    let mut chart = ChartBuilder::on(&area)
        .caption(
            format!("{}: FLOPs to reach each held-out loss", set.title),
            ("sans-serif", 26),
        )
        .margin(15)
        .x_label_area_size(55)
        .y_label_area_size(70)
        // Loss falls to the right, as training proceeds.
        .build_cartesian_2d(lo - pad..hi + pad, 0f64..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "held-out {} loss reached (nats; from the source's start down to scratch's final loss)",
            set.arch.objective()
        ))
        .y_desc(format!("training FLOPs to reach it (x 1e{e})"))
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{:.2}", hi + lo - x))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    // x is mirrored (hi + lo - loss) so that lower losses are to the right.
    let x_of = |l: f64| hi + lo - l;
    for m in &set.methods {
        let colour = colour(m.method);
        let points: Vec<(f64, f64)> = levels
            .iter()
            .zip(&m.iso_flops)
            .filter(|(_, a)| a.n == a.of && a.of > 0)
            .filter_map(|(&l, a)| a.mean.map(|f| (x_of(l), f / scale)))
            .collect();
        if points.is_empty() {
            continue;
        }
        for (&l, a) in levels.iter().zip(&m.iso_flops) {
            if let (Some(min), Some(max)) = (a.min, a.max)
                && a.n == a.of
            {
                chart.draw_series(std::iter::once(PathElement::new(
                    [(x_of(l), min / scale), (x_of(l), max / scale)],
                    colour.mix(0.5).stroke_width(1),
                )))?;
            }
        }
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(m.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    foot.draw(&Text::new(
        "a level is drawn for a method only where every seed reaches it; bars: fastest to slowest seed",
        (12, 4),
        ("sans-serif", 14).into_font().color(&BLACK.mix(0.7)),
    ))?;
    root.present()?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Axis {
    Flops,
    Time,
}

fn draw(set: &SettingSummary, path: &Path, axis: Axis) -> DrawResult {
    let curves: Vec<(Method, usize, &str, &[Point])> = set
        .methods
        .iter()
        .flat_map(|m| {
            m.runs
                .iter()
                .enumerate()
                .map(move |(k, r)| (m.method, k, m.label.as_str(), r.curve.as_slice()))
        })
        .filter(|c| !c.3.is_empty())
        .collect();
    let targets: Vec<f64> = set.methods[0]
        .runs
        .iter()
        .filter(|r| r.complete)
        .filter_map(|r| r.final_loss)
        .collect();
    let target = (!targets.is_empty()).then(|| targets.iter().sum::<f64>() / targets.len() as f64);

    let all = curves.iter().flat_map(|c| c.3.iter());
    let x_of = |p: &Point| match axis {
        Axis::Flops => p.flops,
        Axis::Time => p.wall_s / 60.0,
    };
    let x_max = all.clone().map(x_of).fold(0.0, f64::max);
    let y_min = all.clone().map(|p| p.loss).fold(f64::INFINITY, f64::min);
    let y_top = all
        .clone()
        .map(|p| p.loss)
        .fold(f64::NEG_INFINITY, f64::max);
    // The start of a scratch run (ln V) would squash the interesting range: cap the axis a
    // little above the target and the grown models' starting losses.
    let starts = curves
        .iter()
        .filter(|c| c.0 != Method::Scratch)
        .filter_map(|c| c.3.first().map(|p| p.loss))
        .fold(f64::NEG_INFINITY, f64::max);
    let reference = target
        .unwrap_or(y_min)
        .max(if starts.is_finite() { starts } else { y_min });
    let y_max = y_top.min(reference + (0.5f64).max(1.5 * (reference - y_min)));
    let pad = 0.04 * (y_max - y_min).max(1e-3);
    let (y_lo, y_hi) = (y_min - pad, y_max + pad);
    let (scale, x_desc) = match axis {
        Axis::Flops => {
            let e = if x_max > 0.0 {
                x_max.log10().floor() as i32
            } else {
                0
            };
            (
                10f64.powi(e),
                format!("training FLOPs (x 1e{e}), stage 1 and shallow phases included"),
            )
        }
        Axis::Time if x_max < 2.0 => (1.0 / 60.0, "wall-clock training time (seconds)".to_owned()),
        Axis::Time => (1.0, "wall-clock training time (minutes)".to_owned()),
    };
    let x_hi = (x_max / scale).max(1e-9) * 1.02;
    let decimals = if x_hi >= 20.0 {
        0
    } else if x_hi >= 2.0 {
        1
    } else {
        2
    };

    let root = BitMapBackend::new(path, (1100, 725)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = match axis {
        Axis::Flops => format!(
            "{}: held-out {} loss against FLOPs",
            set.title,
            set.arch.objective()
        ),
        Axis::Time => format!(
            "{}: held-out {} loss against time",
            set.title,
            set.arch.objective()
        ),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(format!("held-out {} loss (nats)", set.arch.objective()))
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.decimals$}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    if let Some(t) = target {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, t), (x_hi, t)],
                8,
                6,
                ShapeStyle {
                    color: BLACK.mix(0.8),
                    filled: false,
                    stroke_width: 1,
                },
            ))?
            .label(format!("target: scratch's final loss {t:.3}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.8)));
    }
    if let Some(l) = set.source.as_ref().and_then(|s| s.eval_loss)
        && l > y_lo
        && l < y_hi
    {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, l), (x_hi, l)],
                2,
                5,
                ShapeStyle {
                    color: grey.mix(1.0),
                    filled: false,
                    stroke_width: 1,
                },
            ))?
            .label(format!("source's held-out loss {l:.3}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
    }
    for &(mi, k, label, curve) in &curves {
        let colour = colour(mi);
        let style = if k == 0 {
            colour.stroke_width(2)
        } else {
            colour.mix(0.45).stroke_width(2)
        };
        let points: Vec<(f64, f64)> = curve
            .iter()
            .map(|p| (x_of(p) / scale, p.loss.min(y_hi)))
            .collect();
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 2, colour.filled())),
        )?;
        let series = chart.draw_series(LineSeries::new(points, style))?;
        if k == 0 {
            series.label(label.to_owned()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    let seeds = set.methods[0].runs.len();
    if seeds > 1 {
        root.draw(&Text::new(
            format!("faint lines: seeds after the first ({seeds} seeds)"),
            (12, 702),
            ("sans-serif", 14).into_font().color(&BLACK.mix(0.7)),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method has its own colour, whatever settings it appears in (a GPT-2 setting once
    /// drew bert2BERT in scratch's black).
    #[test]
    fn every_method_has_its_own_colour() {
        let all = [
            Method::Scratch,
            Method::DirectCopy,
            Method::StackBert,
            Method::Fpi,
            Method::Exact,
            Method::Aki,
            Method::Bert2Bert,
        ];
        let colours: std::collections::BTreeSet<(u8, u8, u8)> = all
            .iter()
            .map(|&m| {
                let RGBColor(r, g, b) = colour(m);
                (r, g, b)
            })
            .collect();
        assert_eq!(colours.len(), all.len());
    }
}
