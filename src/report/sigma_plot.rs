//! `sigma_vs_alpha.svg`: sigma_1 of the loss Hessian against SpecDef's alpha on log-log axes,
//! with the compensation trainable and frozen, the block lower bound, the closed-form bound and
//! the layers' sigma_1(W~) beside them, and guide lines of slope 1 and 2 through the first point.

use super::plots::{decades, log_tick};
use crate::curvature::{SigmaPoint, SigmaSlopes};
use plotters::prelude::*;

type PlotError = Box<dyn std::error::Error>;

/// A curve of the plot: its legend, the value it draws from each point, its colour.
type Series = (&'static str, fn(&SigmaPoint) -> f64, RGBColor);

pub fn sigma_vs_alpha(points: &[SigmaPoint], slopes: &SigmaSlopes) -> Result<String, PlotError> {
    let series: [Series; 5] = [
        (
            "sigma_1(H), C trainable",
            |p| p.c_trainable,
            RGBColor(200, 30, 30),
        ),
        (
            "sigma_1(H), C frozen",
            |p| p.c_frozen,
            RGBColor(30, 80, 200),
        ),
        (
            "block lower bound (C trainable)",
            |p| p.block_lower_bound,
            RGBColor(230, 140, 0),
        ),
        (
            "closed-form bound (C block, compensation_bound.rs)",
            |p| p.closed_form_bound,
            RGBColor(20, 150, 80),
        ),
        (
            "max sigma_1(W~)",
            |p| p.weight_sigma_1,
            RGBColor(90, 90, 90),
        ),
    ];
    let values = points
        .iter()
        .flat_map(|p| series.iter().map(move |s| (s.1)(p)))
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if points.is_empty() || lo > hi {
        return Err("no finite positive sigma_1 to plot".into());
    }
    let (a_lo, a_hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.alpha), hi.max(p.alpha))
    });
    let (x_range, y_range) = (decades(a_lo, a_hi), decades(lo, hi));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!(
            "Hessian sigma_1 against alpha (fitted slopes from alpha {:.0e}: C trainable {:.2}, C frozen {:.2})",
            slopes.from_alpha,
            slopes.c_trainable + 0.0,
            slopes.c_frozen + 0.0
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                super::plots::log_axis(x_range.0, x_range.1, "alpha")?.log_scale(),
                super::plots::log_axis(y_range.0, y_range.1, "sigma_1")?.log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("alpha")
            .y_desc("sigma_1")
            .x_label_formatter(&log_tick)
            .y_label_formatter(&log_tick)
            .draw()?;
        for (name, value, color) in series {
            let xy: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.alpha, value(p)))
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(xy.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        }
        // Guides through the C-frozen curve's first point: what growth like alpha and alpha^2
        // would look like.
        let first = &points[0];
        for (power, name) in [(1, "slope 1 (alpha)"), (2, "slope 2 (alpha^2)")] {
            // Clipped where the guide leaves the plot's top.
            let end = a_hi.min(first.alpha * (y_range.1 / first.c_frozen).powf(1.0 / power as f64));
            let guide: Vec<(f64, f64)> = [first.alpha, end]
                .iter()
                .map(|&a| (a, first.c_frozen * (a / first.alpha).powi(power)))
                .collect();
            let style = BLACK.mix(0.35).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(guide, 6, 4, style))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}
