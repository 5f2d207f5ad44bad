//! `slowdown.svg`, the suite's headline figure: the fewest steps a fine-tune needs to reach the
//! harmful target keeping utility, against SpecDef's alpha (log; the undefended model at 1), per
//! optimiser, for the paper protocol (dashed: only the learning rates that work undefended) and
//! the adaptive sweep (solid: any rate of the grid). "never" (no success) is drawn above the step
//! budget. Dotted: the bound's first-order prediction (PAPER.md 2), the undefended paper-protocol
//! steps times alpha: if the alpha-scaled block sets sigma_1(H), every stable step size shrinks
//! by alpha, and the steps grow by as much.

use super::plots::{decades, log_axis, log_tick};
use super::{distinct, slowdown_points};
use crate::record::RunRecord;
use plotters::prelude::*;

type PlotError = Box<dyn std::error::Error>;

/// The figure, or None where the records hold no undefended model beside a defended one.
pub fn slowdown_figure(records: &[RunRecord]) -> Result<Option<String>, PlotError> {
    let points = slowdown_points(records);
    if !points.iter().any(|p| p.alpha > 1.0) {
        return Ok(None);
    }
    let budget = (records.iter()).map(|r| r.steps).max().unwrap_or(1) as f64;
    let never = budget * 1.1;
    let alpha_hi = points.iter().map(|p| p.alpha).fold(1.0, f64::max);
    let (x_lo, x_hi) = decades(0.5, alpha_hi * 2.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "steps to the harmful target (utility kept) against alpha; solid: adaptive \
                 sweep, dashed: paper protocol, dotted: the bound's prediction",
                ("sans-serif", 18),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                log_axis(x_lo, x_hi, "alpha")?.log_scale(),
                0.0..budget * 1.2,
            )?;
        chart
            .configure_mesh()
            .x_desc("alpha (1: undefended)")
            .y_desc("fewest steps to target")
            .x_label_formatter(&log_tick)
            .y_label_formatter(&|v| {
                if *v > budget {
                    "never".to_string()
                } else {
                    format!("{v:.0}")
                }
            })
            .draw()?;
        let limit = vec![(x_lo, budget * 1.05), (x_hi, budget * 1.05)];
        chart.draw_series(DashedLineSeries::new(
            limit,
            3,
            3,
            BLACK.mix(0.3).stroke_width(1),
        ))?;
        for (i, optimizer) in distinct(points.iter().map(|p| p.optimizer.clone()))
            .iter()
            .enumerate()
        {
            let color = Palette99::pick(i).to_rgba();
            let of: Vec<_> = points
                .iter()
                .filter(|p| &p.optimizer == optimizer)
                .collect();
            let y = |steps: Option<usize>| steps.map_or(never, |s| s as f64);
            let sweep: Vec<(f64, f64)> = of.iter().map(|p| (p.alpha, y(p.sweep))).collect();
            let paper: Vec<(f64, f64)> = of.iter().map(|p| (p.alpha, y(p.paper))).collect();
            chart
                .draw_series(LineSeries::new(sweep.clone(), color.stroke_width(2)))?
                .label(optimizer.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(sweep.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            chart.draw_series(DashedLineSeries::new(
                paper.clone(),
                6,
                4,
                color.stroke_width(1),
            ))?;
            chart.draw_series(
                (paper.iter()).map(|&p| TriangleMarker::new(p, 5, color.stroke_width(1))),
            )?;
            if let Some(undefended) = of.iter().find(|p| p.alpha == 1.0).and_then(|p| p.paper) {
                let predicted =
                    (of.iter()).map(|p| (p.alpha, (undefended as f64 * p.alpha).min(never)));
                chart.draw_series(DashedLineSeries::new(
                    predicted,
                    2,
                    4,
                    color.mix(0.6).stroke_width(1),
                ))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}
