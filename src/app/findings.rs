//! The findings at a glance in the app: the success windows as bars on a log learning-rate
//! axis (one row per model and optimiser, with where alpha and alpha^2 would move the
//! undefended window's centre), and the paper's claims beside what the records measured, the
//! same table `specdef report` writes.

use crate::record::RunRecord;
use crate::report::claims::{Verdict, claims};
use crate::report::success_windows;
use egui_plot::{GridMark, Legend, Line, MarkerShape, Plot, Points};

/// One bar of the window figure.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowRow {
    pub label: String,
    pub optimizer: String,
    /// log10 of the lowest and highest learning rate that reached the target.
    pub window: Option<(f64, f64)>,
    /// log10 of where the undefended window's centre moves if the defence divides the
    /// learning rate by alpha and by alpha^2 (defended rows whose undefended row has a window).
    pub guides: Option<(f64, f64)>,
}

/// The figure's rows, grouped by optimiser, the undefended model first in each group.
pub fn window_rows(records: &[RunRecord]) -> Vec<WindowRow> {
    // Attacks only: a benign run's window is trainability's, against another baseline.
    let attacks: Vec<RunRecord> = records.iter().filter(|r| !r.is_benign()).cloned().collect();
    let records = attacks.as_slice();
    let windows = success_windows(records);
    let alpha_of = |label: &str| {
        (records.iter())
            .find(|r| r.defense_label() == label)
            .and_then(|r| r.alpha)
    };
    let mut rows = Vec::new();
    let optimizers = crate::report::distinct(windows.iter().map(|w| w.optimizer.clone()));
    for optimizer in optimizers {
        let group: Vec<_> = windows
            .iter()
            .filter(|w| w.optimizer == optimizer)
            .collect();
        let centre = group
            .iter()
            .find(|w| w.defense == "none")
            .and_then(|w| Some((w.lowest?.log10() + w.highest?.log10()) / 2.0));
        for w in group {
            let alpha = alpha_of(&w.defense).map(f64::log10);
            rows.push(WindowRow {
                label: format!("{} {}", w.defense, w.optimizer),
                optimizer: optimizer.clone(),
                window: w
                    .lowest
                    .zip(w.highest)
                    .map(|(lo, hi)| (lo.log10(), hi.log10())),
                guides: centre.zip(alpha).map(|(c, a)| (c - a, c - 2.0 * a)),
            });
        }
    }
    rows
}

pub fn window_figure(ui: &mut egui::Ui, records: &[RunRecord]) {
    let rows = window_rows(records);
    if rows.is_empty() {
        return;
    }
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let count = rows.len();
    ui.label("success windows: learning rates that reached the harmful target");
    Plot::new("success_windows")
        .height((18.0 * count as f32).clamp(120.0, 900.0))
        .legend(Legend::default())
        .allow_scroll(false)
        .x_axis_label("log10 learning rate")
        .y_grid_spacer(move |_| {
            (0..count)
                .map(|i| GridMark {
                    value: -(i as f64),
                    step_size: 1.0,
                })
                .collect()
        })
        .y_axis_formatter(move |mark, _| {
            let row = (-mark.value).round();
            if (row - -mark.value).abs() < 1e-6 && row >= 0.0 {
                labels.get(row as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .show(ui, |plot| {
            for (i, row) in rows.iter().enumerate() {
                let y = -(i as f64);
                if let Some((lo, hi)) = row.window {
                    // Half a decade either side: a one-point window is a bar too.
                    let bar = vec![[lo - 0.4, y], [hi + 0.4, y]];
                    plot.line(Line::new(row.optimizer.clone(), bar).width(8.0));
                }
                if let Some((by_alpha, by_alpha_squared)) = row.guides {
                    plot.points(
                        Points::new("undefended centre / alpha", vec![[by_alpha, y]])
                            .shape(MarkerShape::Diamond)
                            .radius(4.0),
                    );
                    plot.points(
                        Points::new("undefended centre / alpha^2", vec![[by_alpha_squared, y]])
                            .shape(MarkerShape::Square)
                            .radius(4.0),
                    );
                }
            }
        });
}

/// The claims table: one row per claim of PAPER.md sections 4 and 5, from the records.
pub fn claims_table(ui: &mut egui::Ui, records: &[RunRecord]) {
    ui.label(
        "the claims against these records (as `specdef report` writes them); a success keeps \
         utility (the paper's collapse criterion), the verdict without it in brackets",
    );
    egui::Grid::new("claims")
        .striped(true)
        .num_columns(4)
        .max_col_width(300.0)
        .show(ui, |ui| {
            for heading in ["verdict", "source, protocol", "claim", "measured"] {
                ui.strong(heading);
            }
            ui.end_row();
            for c in claims(records) {
                let wrapped = |ui: &mut egui::Ui, text: &str| {
                    ui.add(egui::Label::new(egui::RichText::new(text).small()).wrap());
                };
                let colour = match c.verdict {
                    Verdict::Held => egui::Color32::from_rgb(40, 140, 60),
                    Verdict::DidNotHold => egui::Color32::from_rgb(190, 50, 50),
                    Verdict::NotMeasured => ui.visuals().weak_text_color(),
                };
                let verdict = if c.verdict == c.verdict_target_only {
                    c.verdict.name().to_string()
                } else {
                    format!("{} ({})", c.verdict.name(), c.verdict_target_only.name())
                };
                ui.colored_label(colour, verdict);
                wrapped(ui, &format!("{}; {}", c.source, c.protocol.name()));
                wrapped(ui, &format!("{} ({})", c.claim, c.setting));
                wrapped(ui, &c.measured);
                ui.end_row();
            }
        });
}
