//! `steps_heatmap_<optimizer>.svg`: steps to the harmful target over (defence, learning rate),
//! one figure per optimiser: a row per model (the undefended one, then SpecDef by alpha), a
//! column per decade of learning rate. A cell is coloured by the median steps over its runs
//! (every seed, and every random-search trial in the decade), a run that missed the target
//! counting as slower than any; grey where most of them missed it. The text gives the median
//! and, over several runs, how many reached the target.

use super::{distinct, seeds::median};
use crate::record::RunRecord;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type PlotError = Box<dyn std::error::Error>;

/// Fast (few steps) to slow: dark red to pale yellow.
fn shade(fraction: f64) -> RGBColor {
    let mix = |a: f64, b: f64| (a + (b - a) * fraction.clamp(0.0, 1.0)).round() as u8;
    RGBColor(mix(150.0, 255.0), mix(20.0, 235.0), mix(40.0, 160.0))
}

/// The cell of a group of runs: the median steps (None where most missed) and the count reached.
fn cell(runs: &[&RunRecord]) -> (Option<f64>, usize) {
    let steps: Vec<f64> = (runs.iter())
        .map(|r| r.steps_to_success().map_or(f64::INFINITY, |s| s as f64))
        .collect();
    let reached = steps.iter().filter(|s| s.is_finite()).count();
    (median(&steps).filter(|m| m.is_finite()), reached)
}

/// The label of the cell whose centre is at `v` (ticks fall on centres and edges; edges get none).
fn centre_label(v: f64, labels: &[String]) -> String {
    let i = v.floor() as usize;
    if i < labels.len() && (v - v.floor() - 0.5).abs() < 1e-6 {
        labels[i].clone()
    } else {
        String::new()
    }
}

/// One heatmap per optimiser of the plain attacks, as (file name, SVG).
pub fn steps_heatmaps(records: &[RunRecord]) -> Result<Vec<(String, String)>, PlotError> {
    let plain: Vec<&RunRecord> = (records.iter())
        .filter(|r| r.adaptive.is_none() && !r.is_benign())
        .collect();
    let decade = |r: &RunRecord| r.lr.log10().round() as i32;
    let mut decades = distinct(plain.iter().map(|r| decade(r)));
    decades.sort();
    let mut rows = distinct(
        plain
            .iter()
            .map(|r| (r.defense_label(), r.alpha.unwrap_or(0.0).to_bits())),
    );
    rows.sort_by(|a, b| f64::from_bits(a.1).total_cmp(&f64::from_bits(b.1)));
    let most_steps = plain.iter().map(|r| r.steps).max().unwrap_or(1).max(2) as f64;
    let mut figures = Vec::new();
    for optimizer in distinct(plain.iter().map(|r| r.optimizer.clone())) {
        let mut svg = String::new();
        {
            let height = 140 + 44 * rows.len() as u32;
            let root = SVGBackend::with_string(&mut svg, (160 + 64 * decades.len() as u32, height))
                .into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    format!("{optimizer}: steps to the harmful target"),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(130)
                .build_cartesian_2d(0f64..decades.len() as f64, 0f64..rows.len() as f64)?;
            let columns: Vec<String> = decades.iter().map(|d| format!("1e{d}")).collect();
            let lines: Vec<String> = rows.iter().rev().map(|r| r.0.clone()).collect();
            let decade_label = |v: &f64| centre_label(*v, &columns);
            let row_label = |v: &f64| centre_label(*v, &lines);
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(2 * decades.len() + 1)
                .y_labels(2 * rows.len() + 1)
                .x_label_formatter(&decade_label)
                .y_label_formatter(&row_label)
                .x_desc("learning rate (decade)")
                .draw()?;
            let text = ("sans-serif", 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center));
            for (i, (defense, _)) in rows.iter().enumerate() {
                let y = (rows.len() - 1 - i) as f64;
                for (j, &d) in decades.iter().enumerate() {
                    let runs: Vec<&RunRecord> = (plain.iter().copied())
                        .filter(|r| {
                            r.optimizer == optimizer
                                && r.defense_label() == *defense
                                && decade(r) == d
                        })
                        .collect();
                    if runs.is_empty() {
                        continue;
                    }
                    let (steps, reached) = cell(&runs);
                    let color = match steps {
                        Some(s) => shade(s.ln() / most_steps.ln()),
                        None => RGBColor(215, 215, 215),
                    };
                    let x = j as f64;
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x + 0.03, y + 0.05), (x + 0.97, y + 0.95)],
                        color.filled(),
                    )))?;
                    let label = match (steps, runs.len()) {
                        (Some(s), 1) => format!("{s:.0}"),
                        (Some(s), n) => format!("{s:.0} {reached}/{n}"),
                        (None, 1) => "-".to_string(),
                        (None, n) => format!("{reached}/{n}"),
                    };
                    chart.draw_series(std::iter::once(Text::new(
                        label,
                        (x + 0.5, y + 0.5),
                        text.clone(),
                    )))?;
                }
            }
            root.present()?;
        }
        figures.push((format!("steps_heatmap_{optimizer}.svg"), svg));
    }
    Ok(figures)
}
