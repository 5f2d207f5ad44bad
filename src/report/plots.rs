//! SVG plots of a scenario's records: loss curves (per optimiser, each defence's attack at the
//! learning rate fastest to the target, see [`super::fastest_run`]) and steps to target against
//! the learning rate.

use super::{ChosenBy, distinct, fastest_run};
use crate::record::RunRecord;
use plotters::prelude::*;

const SIZE: (u32, u32) = (960, 600);

type PlotError = Box<dyn std::error::Error>;

/// The figures of a set of records, and those that could not be drawn.
#[derive(Debug, Default)]
pub struct Figures {
    /// (file name, SVG text), for the caller to write.
    pub drawn: Vec<(String, String)>,
    /// One note per figure left out, saying why (an axis range that cannot be drawn): a figure
    /// never costs a run its results.
    pub skipped: Vec<String>,
}

impl Figures {
    /// Every figure, or the notes of those that could not be drawn.
    pub fn all_drawn(self) -> Result<Vec<(String, String)>, String> {
        if self.skipped.is_empty() {
            Ok(self.drawn)
        } else {
            Err(self.skipped.join("; "))
        }
    }
}

/// Every plot of the records; a figure that cannot be drawn is skipped with a note.
pub fn render_all(records: &[RunRecord]) -> Figures {
    let mut figures = Figures::default();
    let mut add = |name: &str, result: Result<Vec<(String, String)>, PlotError>| match result {
        Ok(drawn) => figures.drawn.extend(drawn),
        Err(e) => figures.skipped.push(format!("{name} not drawn: {e}")),
    };
    let one = |name: &str, svg: Result<String, PlotError>| svg.map(|s| vec![(name.to_string(), s)]);
    add("the loss curves", loss_curves(records));
    add(
        "steps_to_target.svg",
        one("steps_to_target.svg", steps_to_target(records)),
    );
    add(
        "slowdown.svg",
        super::slowdown_plot::slowdown_figure(records).map(|svg| {
            svg.map(|s| ("slowdown.svg".to_string(), s))
                .into_iter()
                .collect()
        }),
    );
    add(
        "success_windows.svg",
        one(
            "success_windows.svg",
            super::window_plot::success_windows_figure(records),
        ),
    );
    add(
        "best_attack_vs_trials.svg",
        one(
            "best_attack_vs_trials.svg",
            super::trials_plot::best_attack_vs_trials(records),
        ),
    );
    add("the heatmaps", super::heatmap::steps_heatmaps(records));
    figures
}

/// The smallest and largest values a log axis may span. plotters' tick placement never ends
/// on a range whose end is not finite (an lr of 1e308 doubled for the margin is inf), so every
/// log axis is checked here first and the figure skipped where it fails.
const LOG_AXIS_LIMITS: (f64, f64) = (1e-300, 1e300);

/// `lo..hi` for a log axis of `what`, or an error saying why it cannot be drawn.
pub(super) fn log_axis(lo: f64, hi: f64, what: &str) -> Result<std::ops::Range<f64>, PlotError> {
    let (min, max) = LOG_AXIS_LIMITS;
    if !(lo.is_finite() && hi.is_finite() && min <= lo && lo < hi && hi <= max) {
        return Err(format!(
            "the {what} axis would span {lo:e}..{hi:e}; a log axis needs {min:e} <= from < to <= {max:e}"
        )
        .into());
    }
    Ok(lo..hi)
}

/// A log axis's tick label: `1e-3`, `2e-1` (plotters' own labels mix `1e-5` with `0.0001` and
/// print `0.30000000000000004`).
pub(super) fn log_tick(value: &f64) -> String {
    format!("{value:.0e}")
}

/// Whole decades around `lo..hi` (positive), so the log axis always has labelled powers of ten
/// (plotters labels none in a range like 1.2..2.9). Widened by a hair, so that rounding in
/// plotters' tick placement (`log10(0.01)` is not quite -2) keeps both end decades labelled.
pub(super) fn decades(lo: f64, hi: f64) -> (f64, f64) {
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo * (1.0 - 1e-9), hi * (1.0 + 1e-9))
}

/// One series' legend: the learning rate and why it is the one shown.
fn legend(run: &RunRecord, chosen: ChosenBy) -> String {
    match (chosen, run.steps_to_target) {
        (ChosenBy::FastestToTarget, Some(steps)) => format!(
            "{} lr={:.0e}: target at step {steps}",
            run.defense_label(),
            run.lr
        ),
        _ => format!(
            "{} lr={:.0e}: target not reached, lowest final loss",
            run.defense_label(),
            run.lr
        ),
    }
}

/// One SVG per optimiser: `loss_<optimizer>.svg`, each defence's loss curve at its learning rate
/// fastest to the target (the lowest final loss where none reached it, as the legend says). The
/// curve starts at the first step the run recorded; the axis at step 0.
pub fn loss_curves(records: &[RunRecord]) -> Result<Vec<(String, String)>, PlotError> {
    let mut plots = Vec::new();
    for optimizer in distinct(records.iter().map(|r| r.optimizer.clone())) {
        let mut svg = String::new();
        let best: Vec<(&RunRecord, ChosenBy)> =
            distinct(records.iter().map(RunRecord::defense_label))
                .into_iter()
                .filter_map(|defense| {
                    fastest_run(
                        records
                            .iter()
                            .filter(|r| r.optimizer == optimizer && r.defense_label() == defense),
                    )
                })
                .collect();
        let points = |r: &RunRecord| -> Vec<(f64, f64)> {
            r.loss_curve
                .iter()
                .filter_map(|&(step, loss)| {
                    loss.filter(|l| l.is_finite() && *l > 0.0)
                        .map(|l| (step as f64, l))
                })
                .collect()
        };
        let all: Vec<(f64, f64)> = best.iter().flat_map(|(r, _)| points(r)).collect();
        let max_step = all.iter().map(|p| p.0).fold(1.0, f64::max);
        let (lo, hi) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let (lo, hi) = if lo <= hi {
            decades(lo, hi)
        } else {
            (1e-3, 10.0)
        };
        let fallback = best
            .iter()
            .any(|(_, chosen)| *chosen == ChosenBy::LowestFinalLoss);
        let caption = format!(
            "harmful fine-tune, {optimizer}: per defence, the lr fastest to the target{}",
            if fallback {
                " (lowest final loss where none reached it)"
            } else {
                ""
            }
        );
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 22))
                .margin(16)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..max_step, log_axis(lo, hi, "loss")?.log_scale())?;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc("training loss")
                .x_label_formatter(&|step| format!("{step:.0}"))
                .y_label_formatter(&log_tick)
                .draw()?;
            for (i, (r, chosen)) in best.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(points(r), color.stroke_width(2)))?
                    .label(legend(r, *chosen))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        plots.push((format!("loss_{optimizer}.svg"), svg));
    }
    Ok(plots)
}

/// `steps_to_target.svg`: one series per defence and optimiser; learning rates that never
/// succeeded (reached the target keeping utility) are left out.
pub fn steps_to_target(records: &[RunRecord]) -> Result<String, PlotError> {
    let mut svg = String::new();
    let lrs: Vec<f64> = records.iter().map(|r| r.lr).collect();
    let (lr_lo, lr_hi) = lrs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &lr| {
        (lo.min(lr), hi.max(lr))
    });
    let max_steps = records.iter().map(|r| r.steps).max().unwrap_or(1) as f64;
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "steps to the harmful target (utility kept) against learning rate",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                log_axis(lr_lo / 2.0, lr_hi * 2.0, "learning-rate")?.log_scale(),
                0.0..max_steps * 1.05,
            )?;
        chart
            .configure_mesh()
            .x_desc("learning rate")
            .y_desc("steps to target")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        let series = distinct(
            records
                .iter()
                .map(|r| (r.defense_label(), r.optimizer.clone())),
        );
        for (i, (defense, optimizer)) in series.iter().enumerate() {
            let points: Vec<(f64, f64)> = records
                .iter()
                .filter(|r| &r.defense_label() == defense && &r.optimizer == optimizer)
                .filter_map(|r| r.steps_to_success().map(|s| (r.lr, s as f64)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(format!("{defense} {optimizer}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}
