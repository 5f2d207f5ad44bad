//! `success_windows.svg`, the figure that says it at a glance: each defence's and optimiser's
//! success window (the learning rates that reached the harmful target) as a bar on a log
//! learning-rate axis, one row per defence and optimiser, grouped by optimiser. Beside each
//! optimiser's defended rows, guides mark where its undefended window's centre would sit if the
//! defence moved it by alpha (dashed) or by alpha^2 (dotted): SGD's bars follow the dotted guide,
//! Adam's the dashed one, and an optimiser the defence does not move stays where it was.

use super::plots::log_tick;
use super::{distinct, success_windows};
use crate::record::RunRecord;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type PlotError = Box<dyn std::error::Error>;

/// One row of the figure.
struct Row {
    label: String,
    optimizer: String,
    undefended: bool,
    /// SpecDef's alpha, where the defence has one (a baseline has none: no guide).
    alpha: Option<f64>,
    window: Option<(f64, f64)>,
}

fn rows(records: &[RunRecord]) -> Vec<Row> {
    let windows = success_windows(records);
    let optimizers = distinct(records.iter().map(|r| r.optimizer.clone()));
    let mut rows = Vec::new();
    for optimizer in optimizers {
        let mut group: Vec<Row> = windows
            .iter()
            .filter(|w| w.optimizer == optimizer)
            .map(|w| {
                let record = records.iter().find(|r| r.defense_label() == w.defense);
                Row {
                    label: format!("{} {}", w.defense, w.optimizer),
                    optimizer: optimizer.clone(),
                    undefended: record.is_some_and(RunRecord::is_undefended),
                    alpha: record.and_then(|r| r.alpha),
                    window: w.lowest.zip(w.highest),
                }
            })
            .collect();
        // Undefended first, then by alpha, then the defences without one; the order of the
        // records among equals.
        let rank = |r: &Row| match (r.undefended, r.alpha) {
            (true, _) => (0, 0.0),
            (false, Some(alpha)) => (1, alpha),
            (false, None) => (2, 0.0),
        };
        group.sort_by(|a, b| {
            let (a, b) = (rank(a), rank(b));
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
        });
        rows.extend(group);
    }
    rows
}

/// The figure for the records (one row per defence and optimiser, top to bottom).
pub fn success_windows_figure(records: &[RunRecord]) -> Result<String, PlotError> {
    // Attacks only: a benign run's window is trainability's, measured against another baseline.
    let attacks: Vec<RunRecord> = records.iter().filter(|r| !r.is_benign()).cloned().collect();
    let records = attacks.as_slice();
    let rows = rows(records);
    let mut lrs: Vec<f64> = records.iter().map(|r| r.lr).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    let (Some(&lr_lo), Some(&lr_hi)) = (lrs.first(), lrs.last()) else {
        return Err("no runs to plot".into());
    };
    // Half the grid's spacing on either side of a window, so a one-point window is a bar too.
    let half_step = lrs
        .windows(2)
        .map(|w| (w[1] / w[0]).sqrt())
        .fold(f64::INFINITY, f64::min)
        .min(10f64.sqrt());
    let half_step = if half_step.is_finite() {
        half_step
    } else {
        10f64.sqrt()
    };
    let x_range = (lr_lo / half_step / 2.0)..(lr_hi * half_step * 2.0);
    let height = 100 + 25 * rows.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "success windows: learning rates that reached the harmful target",
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(210)
            .build_cartesian_2d(
                super::plots::log_axis(x_range.start, x_range.end, "learning-rate")?.log_scale(),
                -0.5..rows.len() as f64 - 0.5,
            )?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("learning rate")
            .x_label_formatter(&log_tick)
            .draw()?;
        // Row i is drawn at y = n - 1 - i, so the first row is on top.
        let y = |i: usize| (rows.len() - 1 - i) as f64;
        let optimizers = distinct(rows.iter().map(|r| r.optimizer.clone()));
        let colour = |optimizer: &str| {
            let i = optimizers.iter().position(|o| o == optimizer).unwrap_or(0);
            Palette99::pick(i).to_rgba()
        };
        for (i, row) in rows.iter().enumerate() {
            let (left, _) = chart.backend_coord(&(x_range.start, y(i)));
            let (_, top) = chart.backend_coord(&(x_range.start, y(i)));
            root.draw(&Text::new(
                row.label.clone(),
                (left - 8, top),
                ("sans-serif", 13)
                    .into_font()
                    .into_text_style(&root)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
            match row.window {
                Some((lo, hi)) => {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(lo / half_step, y(i) - 0.3), (hi * half_step, y(i) + 0.3)],
                        colour(&row.optimizer).filled(),
                    )))?;
                }
                None => {
                    chart.draw_series(std::iter::once(Text::new(
                        "no learning rate reached the target",
                        (lr_lo, y(i)),
                        ("sans-serif", 12)
                            .into_font()
                            .color(&BLACK.mix(0.6))
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )))?;
                }
            }
        }
        draw_guides(&mut chart, &rows, &y, &x_range)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Per optimiser, from its undefended window's centre c: the polylines through c / alpha and
/// c / alpha^2 on its defended rows (left out where they leave the axis).
fn draw_guides<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<
            plotters::coord::combinators::LogCoord<f64>,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
    rows: &[Row],
    y: &dyn Fn(usize) -> f64,
    x_range: &std::ops::Range<f64>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let mut labelled = false;
    for optimizer in distinct(rows.iter().map(|r| r.optimizer.clone())) {
        let group: Vec<(usize, &Row)> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.optimizer == optimizer)
            .collect();
        let Some(centre) = group
            .iter()
            .find(|(_, r)| r.undefended)
            .and_then(|(_, r)| r.window)
            .map(|(lo, hi)| (lo * hi).sqrt())
        else {
            continue;
        };
        for (power, dash, name) in [
            (1, 8, "dashed: undefended centre / alpha"),
            (2, 3, "dotted: undefended centre / alpha^2"),
        ] {
            let points: Vec<(f64, f64)> = group
                .iter()
                .filter_map(|&(i, r)| {
                    let alpha = if r.undefended { Some(1.0) } else { r.alpha };
                    Some((centre / alpha?.powi(power), y(i)))
                })
                .filter(|(x, _)| x_range.contains(x))
                .collect();
            let style = BLACK.mix(0.55).stroke_width(2);
            let series =
                chart.draw_series(DashedLineSeries::new(points.clone(), dash, 4, style))?;
            if !labelled {
                series
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Cross::new(p, 4, BLACK.mix(0.55).stroke_width(1))),
            )?;
        }
        labelled = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the shipped quick-scenario records: a row per defence and optimiser, labelled, with a
    /// bar where a window exists and the note where none does.
    #[test]
    fn every_defence_and_optimiser_gets_a_labelled_row() {
        let text = include_str!("../../reference/quick-cpu64/runs.jsonl");
        let records = crate::report::from_json_lines(text).unwrap();
        let svg = success_windows_figure(&records).unwrap();
        let windows = success_windows(&records);
        assert!(windows.len() >= 4);
        for w in &windows {
            let label = format!("{} {}", w.defense, w.optimizer);
            assert!(svg.contains(&label), "no row {label:?}");
        }
        let missing = windows.iter().any(|w| w.lowest.is_none());
        assert_eq!(svg.contains("no learning rate reached the target"), missing);
    }
}
