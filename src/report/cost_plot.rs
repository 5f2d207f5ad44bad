//! `cost_curves.svg`: what an attack step costs as the model and the batch grow, from bench
//! records of any engines (specdef's, a peer's in the same schema): steps/s (top) and matmul
//! GFLOP/s (bottom) against the hidden width at batch 128 (left) and against the batch at width
//! 256 (right), log-log, undefended solid and SpecDef dashed. The highest all-core matmul GFLOP/s
//! found in the records is drawn across the GFLOP/s panels: the line no step can pass.

use super::plots::decades;
use crate::benchmark::{AttackShape, BenchRecord};
use plotters::coord::Shift;
use plotters::prelude::*;

type PlotError = Box<dyn std::error::Error>;

/// Which of the suite's two sweeps a panel shows.
#[derive(Clone, Copy)]
enum Sweep {
    Width,
    Batch,
}

impl Sweep {
    /// The sweep's x value of a shape, where the shape lies on the sweep.
    fn x(self, shape: AttackShape) -> Option<f64> {
        match self {
            Sweep::Width if shape.batch == 128 => Some(shape.width as f64),
            Sweep::Batch if shape.width == 256 => Some(shape.batch as f64),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sweep::Width => "hidden width (batch 128)",
            Sweep::Batch => "batch (width 256)",
        }
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(200, 30, 30),
    RGBColor(30, 80, 200),
    RGBColor(20, 140, 60),
    RGBColor(230, 140, 0),
    RGBColor(120, 40, 160),
    RGBColor(90, 90, 90),
];

/// One line of a panel: an engine, undefended or defended, its (x, y) points by x.
struct Line {
    engine: String,
    defended: bool,
    points: Vec<(f64, f64)>,
}

fn lines(records: &[BenchRecord], sweep: Sweep, gflops: bool) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for record in records {
        let Some(shape) = AttackShape::from_name(&record.workload) else {
            continue;
        };
        let Some(x) = sweep.x(shape) else {
            continue;
        };
        let y = if gflops {
            match record.flop_per_step {
                Some(flop) => record.median * flop / 1e9,
                None => continue,
            }
        } else {
            record.median
        };
        if !(y.is_finite() && y > 0.0) {
            continue;
        }
        let at = lines
            .iter()
            .position(|l| l.engine == record.engine && l.defended == shape.defended);
        let line = match at {
            Some(i) => &mut lines[i],
            None => {
                lines.push(Line {
                    engine: record.engine.clone(),
                    defended: shape.defended,
                    points: Vec::new(),
                });
                lines.last_mut().expect("just pushed")
            }
        };
        line.points.push((x, y));
    }
    for line in &mut lines {
        line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// The highest matmul GFLOP/s in the records, and the engine that reached it.
fn peak(records: &[BenchRecord]) -> Option<(f64, String)> {
    records
        .iter()
        .filter(|r| r.unit == "GFLOP/s" && r.median.is_finite())
        .max_by(|a, b| a.median.total_cmp(&b.median))
        .map(|r| (r.median, format!("{} {}", r.engine, r.workload)))
}

pub fn cost_curves(records: &[BenchRecord]) -> Result<String, PlotError> {
    let mut engines: Vec<String> = Vec::new();
    for r in records {
        if AttackShape::from_name(&r.workload).is_some() && !engines.contains(&r.engine) {
            engines.push(r.engine.clone());
        }
    }
    if engines.is_empty() {
        return Err("no attack-step records to plot (run `specdef bench --suite curves`)".into());
    }
    let peak = peak(records);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            "Cost of an Adam attack step, MLP 64-W-W-10 (solid: undefended, dashed: SpecDef a=1e4 on every layer)",
            ("sans-serif", 18),
        )?;
        let panels = root.split_evenly((2, 2));
        for (i, panel) in panels.iter().enumerate() {
            let sweep = if i % 2 == 0 {
                Sweep::Width
            } else {
                Sweep::Batch
            };
            let gflops = i >= 2;
            draw_panel(panel, records, &engines, sweep, gflops, peak.as_ref())?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    records: &[BenchRecord],
    engines: &[String],
    sweep: Sweep,
    gflops: bool,
    peak: Option<&(f64, String)>,
) -> Result<(), PlotError> {
    let lines = lines(records, sweep, gflops);
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let mut ys: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .collect();
    if gflops {
        ys.extend(peak.map(|p| p.0));
    }
    let (x_lo, x_hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (y_lo, y_hi) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &y| (lo.min(y), hi.max(y)));
    if x_lo > x_hi || y_lo > y_hi {
        area.titled(
            &format!("{}: no records", sweep.label()),
            ("sans-serif", 14),
        )?;
        return Ok(());
    }
    let y_range = decades(y_lo, y_hi);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            super::plots::log_axis(x_lo / 1.2, x_hi * 1.2, sweep.label())?.log_scale(),
            super::plots::log_axis(y_range.0, y_range.1, "throughput")?.log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(sweep.label())
        .y_desc(if gflops { "matmul GFLOP/s" } else { "steps/s" })
        .x_labels(6)
        .y_labels(6)
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()?;
    for line in &lines {
        let index = engines.iter().position(|e| *e == line.engine).unwrap_or(0);
        let color = COLORS[index % COLORS.len()];
        let style = color.stroke_width(2);
        let legend = move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 20, y)], style);
        // One legend entry per engine (its colour), in the steps/s panels only; the line style
        // (solid, dashed) is explained in the title.
        if line.defended {
            chart.draw_series(DashedLineSeries::new(line.points.clone(), 7, 4, style))?;
        } else if gflops {
            chart.draw_series(LineSeries::new(line.points.clone(), style))?;
        } else {
            chart
                .draw_series(LineSeries::new(line.points.clone(), style))?
                .label(line.engine.clone())
                .legend(legend);
        }
        chart.draw_series(
            line.points
                .iter()
                .map(|&p| Circle::new(p, 3, color.filled())),
        )?;
    }
    if let (true, Some((value, what))) = (gflops, peak) {
        let style = BLACK.mix(0.6).stroke_width(1);
        chart
            .draw_series(LineSeries::new(
                [(x_lo / 1.2, *value), (x_hi * 1.2, *value)],
                style,
            ))?
            .label(format!("peak: {what}, {value:.0} GFLOP/s"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(if gflops {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}
