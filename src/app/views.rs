//! Read-only views of a scenario's state: progress with the live loss of the run in progress,
//! finished runs' curves undefended vs defended, and the tables the CLI prints.

use crate::report;
use crate::scenario::{DefenseSummary, RunRecord, ScenarioSession};
use egui_plot::{HLine, Legend, Line, MarkerShape, Plot, Points};

fn log10_points(curve: impl Iterator<Item = (usize, Option<f64>)>) -> Vec<[f64; 2]> {
    curve
        .filter_map(|(step, loss)| {
            loss.filter(|l| l.is_finite() && *l > 0.0)
                .map(|l| (step, l))
        })
        .map(|(step, loss)| [step as f64, loss.log10()])
        .collect()
}

pub fn progress(ui: &mut egui::Ui, session: &ScenarioSession) {
    let (done, total) = session.progress();
    let fraction = done as f32 / total.max(1) as f32;
    ui.add(egui::ProgressBar::new(fraction).text(format!(
        "{done}/{total} attack runs: {}",
        session.describe()
    )));
    // Only while a training run has points to show: no empty axes between runs.
    let points = (session.live_loss_curve())
        .map(|curve| log10_points(curve.iter().map(|&(step, loss)| (step, Some(loss)))))
        .filter(|points| !points.is_empty());
    if let Some(points) = points {
        Plot::new("live_loss")
            .height(160.0)
            .legend(Legend::default())
            .x_axis_label("step")
            .y_axis_label("log10 training loss")
            .show(ui, |plot| plot.line(Line::new("run in progress", points)));
    }
}

/// Where a diverged run's loss curve ends (its last finite log10 loss, at the step of
/// divergence), for a marker: the curve is drawn up to there. None for a run that did not
/// diverge; a run that diverged before any finite loss is marked at `fallback_y`.
pub fn divergence_marker(run: &RunRecord, fallback_y: f64) -> Option<[f64; 2]> {
    let step = run.diverged_at?;
    let last = log10_points(run.loss_curve.iter().copied()).last().copied();
    Some([step as f64, last.map_or(fallback_y, |[_, y]| y)])
}

/// Which finished attack the curve plots show, for every defence at once: the user's choice, else
/// the attack that beats the undefended model fastest (re-chosen as runs finish).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurveSelection {
    pub chosen: Option<(String, f64)>,
}

/// The attack (optimiser, lr) that wins fastest against the undefended model, where the
/// defence's effect shows, by the rule of the CLI's loss plots ([`report::fastest_run`]): fewest
/// steps to the target, ties to the lower final loss; where no attack reached the target, the
/// lowest final loss. With a line saying which rule chose it.
fn most_telling_attack(records: &[RunRecord]) -> Option<((String, f64), &'static str)> {
    let (run, chosen) = report::fastest_run(records.iter().filter(|r| r.defense == "none"))?;
    let why = match chosen {
        report::ChosenBy::FastestToTarget => {
            "the fastest to the target against the undefended model"
        }
        report::ChosenBy::LowestFinalLoss => {
            "no attack reached the target against the undefended model: the lowest final loss"
        }
    };
    Some(((run.optimizer.clone(), run.lr), why))
}

/// Every attack (optimiser, lr) in the records, in first-seen order.
fn attacks(records: &[RunRecord]) -> Vec<(String, f64)> {
    let mut attacks: Vec<(String, f64)> = Vec::new();
    for r in records {
        if !attacks
            .iter()
            .any(|(o, lr)| *o == r.optimizer && *lr == r.lr)
        {
            attacks.push((r.optimizer.clone(), r.lr));
        }
    }
    attacks
}

/// The attack the curve plots show, and why: the user's choice, else the most telling attack,
/// else the first.
pub fn shown_attack(
    records: &[RunRecord],
    selection: &CurveSelection,
) -> Option<((String, f64), &'static str)> {
    let attacks = attacks(records);
    let first = attacks.first()?;
    Some(
        match selection
            .chosen
            .clone()
            .filter(|chosen| attacks.contains(chosen))
        {
            Some(chosen) => (chosen, "as chosen"),
            None => most_telling_attack(records)
                .unwrap_or_else(|| (first.clone(), "the first attack run")),
        },
    )
}

/// Loss and harmful-accuracy curves of one attack (optimiser, lr) against each defence, side by
/// side: how much slower the attack is under SpecDef.
pub fn attack_curves(ui: &mut egui::Ui, records: &[RunRecord], selection: &mut CurveSelection) {
    let Some(((optimizer, lr), why)) = shown_attack(records, selection) else {
        return;
    };
    let attacks = attacks(records);
    ui.horizontal(|ui| {
        ui.label("attack:");
        egui::ComboBox::from_id_salt("attack_curves")
            .selected_text(format!("{optimizer} lr={lr:.0e}"))
            .show_ui(ui, |ui| {
                for attack in &attacks {
                    let shown = attack.0 == optimizer && attack.1 == lr;
                    if ui
                        .selectable_label(shown, format!("{} lr={:.0e}", attack.0, attack.1))
                        .clicked()
                    {
                        selection.chosen = Some(attack.clone());
                    }
                }
            });
        ui.label(egui::RichText::new(why).small());
    });
    let runs: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.optimizer == optimizer && r.lr == lr)
        .collect();
    let target = runs.first().map_or(0.9, |r| r.target_accuracy);
    ui.columns(2, |columns| {
        Plot::new("attack_loss")
            .height(200.0)
            .legend(Legend::default())
            .x_axis_label("step")
            .y_axis_label("log10 training loss")
            .show(&mut columns[0], |plot| {
                let curves: Vec<Vec<[f64; 2]>> = (runs.iter())
                    .map(|r| log10_points(r.loss_curve.iter().copied()))
                    .collect();
                let highest = (curves.iter().flatten())
                    .map(|p| p[1])
                    .fold(0.0f64, f64::max);
                for (r, points) in runs.iter().zip(curves) {
                    plot.line(Line::new(r.defense_label(), points));
                    if let Some(at) = divergence_marker(r, highest) {
                        let name = format!("{}: diverged at step {}", r.defense_label(), at[0]);
                        plot.points(
                            Points::new(name, vec![at])
                                .shape(MarkerShape::Cross)
                                .radius(7.0),
                        );
                    }
                }
            });
        Plot::new("attack_accuracy")
            .height(200.0)
            .legend(Legend::default())
            .x_axis_label("step")
            .y_axis_label("harmful held-out accuracy")
            .include_y(0.0)
            .include_y(1.0)
            .show(&mut columns[1], |plot| {
                plot.hline(HLine::new("target", target));
                for r in &runs {
                    let points: Vec<[f64; 2]> = r
                        .accuracy_curve
                        .iter()
                        .map(|&(step, acc)| [step as f64, acc])
                        .collect();
                    plot.line(Line::new(r.defense_label(), points));
                }
            });
    });
}

/// The CLI's tables, then sigma_1 per layer where the defences are known (not for loaded files).
pub fn tables(ui: &mut egui::Ui, records: &[RunRecord], summaries: &[DefenseSummary]) {
    let mut text = report::main_table(records);
    text.push('\n');
    text.push_str(&report::success_window_table(records));
    if let Some(adaptive) = report::adaptive_table(records) {
        text.push('\n');
        text.push_str(&adaptive);
    }
    if !summaries.is_empty() {
        text.push_str("\nfunction preservation (relative output error, max/mean):\n");
        text.push_str(&report::precision_table(summaries));
        text.push_str(
            "\nsigma_1 per layer: of the function's weight (C W~ = W) / of the stored W~\n",
        );
        for s in summaries {
            let layers: Vec<String> = s
                .sigma_1
                .iter()
                .map(|l| format!("{}: {:.3} / {:.3e}", l.layer, l.effective, l.stored))
                .collect();
            text.push_str(&format!("  {:<20} {}\n", s.label, layers.join("   ")));
        }
    }
    ui.label(egui::RichText::new(text).monospace());
}

/// The benchmark's results, one line per workload.
pub fn benchmark(ui: &mut egui::Ui, records: &[crate::benchmark::BenchRecord]) {
    if records.is_empty() {
        return;
    }
    let mut text = format!(
        "benchmark on {} ({}):\n",
        records[0].adapter, records[0].timer
    );
    for r in records {
        text.push_str(&r.summary());
        text.push('\n');
    }
    ui.label(egui::RichText::new(text).monospace());
}

/// "Check this device"'s verdict, coloured, and the comparison's report under it.
pub fn device_check(ui: &mut egui::Ui, agree: bool, report: &str) {
    let (verdict, details) = report.split_once('\n').unwrap_or((report, ""));
    let color = if agree {
        egui::Color32::from_rgb(40, 140, 60)
    } else {
        ui.visuals().error_fg_color
    };
    ui.colored_label(color, verdict);
    egui::CollapsingHeader::new("the comparison, run by run")
        .default_open(!agree)
        .show(ui, |ui| ui.monospace(details));
}
