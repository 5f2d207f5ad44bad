//! `best_attack_vs_trials.svg`: per defence, the expected best harmful accuracy the attacker
//! has found after n trials (random orders of its plain attack runs, see `trials`), with the
//! harmful target as a line: how long the defence makes the attacker search.

use super::seeds::has_seeds;
use super::trials::{searches, seed_searches};
use crate::record::RunRecord;
use plotters::prelude::*;

type PlotError = Box<dyn std::error::Error>;

/// One line per defence: (label, points (n, lowest, median, highest) over seeds; all three
/// equal with one seed).
type Curve = (String, Vec<(f64, f64, f64, f64)>);

fn curves(records: &[RunRecord]) -> Vec<Curve> {
    if !has_seeds(records) {
        return (searches(records, 0).into_iter())
            .map(|s| {
                let points = (s.best_after.iter().enumerate())
                    .map(|(n, &b)| ((n + 1) as f64, b, b, b))
                    .collect();
                (s.defense, points)
            })
            .collect();
    }
    (seed_searches(records).into_iter())
        .map(|s| {
            let points = (s.best_after_spread().into_iter().enumerate())
                .map(|(n, (lo, mid, hi))| ((n + 1) as f64, lo, mid, hi))
                .collect();
            (
                format!("{} (median of {} seeds)", s.defense, s.per_seed.len()),
                points,
            )
        })
        .collect()
}

pub fn best_attack_vs_trials(records: &[RunRecord]) -> Result<String, PlotError> {
    let curves = curves(records);
    let most = curves.iter().map(|c| c.1.len()).max().unwrap_or(1).max(1);
    let target = records.first().map_or(0.9, |r| r.target_accuracy);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "the attacker's search: best harmful accuracy after n trials",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1f64..most as f64, 0f64..1.0)?;
        chart
            .configure_mesh()
            .x_desc("attack trials (expected over random orders of the runs; band: lowest to highest seed)")
            .y_desc("best final harmful accuracy")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                [(1.0, target), (most as f64, target)],
                BLACK.mix(0.5).stroke_width(1),
            ))?
            .label(format!("harmful target {target}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        for (i, (label, points)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            // The spread over seeds: the band between the lowest and the highest seed.
            let band: Vec<(f64, f64)> = (points.iter().map(|p| (p.0, p.1)))
                .chain(points.iter().rev().map(|p| (p.0, p.3)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                color.mix(0.15).filled(),
            )))?;
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0, p.2)),
                    color.stroke_width(2),
                ))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}
