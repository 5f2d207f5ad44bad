//! Slowdown as the paper measures it: the number of steps a fine-tune needs. The paper's table
//! (steps / harmful accuracy at the learning rates that work on the undefended model, the
//! attacker who does not know the defence) and the steps-to-target ratio, defended over
//! undefended, at each attacker's best learning rate in the whole grid (the attacker who
//! searches). Successes keep utility (the collapse criterion); plain fine-tuning only.

use super::distinct;
use super::table::cell;
use crate::defense::CompensationForm;
use crate::record::RunRecord;
use std::fmt::Write;

/// The fewest steps to a success among `runs`, and the learning rate that took them.
fn best(runs: &[&RunRecord]) -> Option<(usize, f64)> {
    (runs.iter())
        .filter_map(|r| r.steps_to_success().map(|s| (s, r.lr)))
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
}

/// One model's fewest steps to a success under one optimiser, by protocol: at the learning
/// rates where the undefended model succeeds (paper) and anywhere in the grid (sweep). None:
/// never.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowdownPoint {
    pub optimizer: String,
    /// 1 for the undefended model.
    pub alpha: f64,
    pub paper: Option<usize>,
    pub sweep: Option<usize>,
}

/// The headline figure's points: the undefended model and SpecDef (with C) at each alpha, per
/// optimiser, plain fine-tuning.
pub fn slowdown_points(records: &[RunRecord]) -> Vec<SlowdownPoint> {
    let plain: Vec<&RunRecord> = (records.iter())
        .filter(|r| !r.is_benign() && r.adaptive.is_none())
        .filter(|r| r.is_undefended() || r.is_spec_def_in(CompensationForm::Full))
        .collect();
    let mut points = Vec::new();
    for optimizer in distinct(plain.iter().map(|r| r.optimizer.clone())) {
        let of = |alpha: Option<f64>| -> Vec<&RunRecord> {
            (plain.iter().copied())
                .filter(|r| r.optimizer == optimizer && r.alpha == alpha)
                .collect()
        };
        let undefended = of(None);
        if undefended.is_empty() {
            continue;
        }
        let window: Vec<u64> = (undefended.iter())
            .filter(|r| r.steps_to_success().is_some())
            .map(|r| r.lr.to_bits())
            .collect();
        let mut alphas: Vec<Option<f64>> = vec![None];
        alphas.extend(
            distinct(plain.iter().filter_map(|r| r.alpha))
                .into_iter()
                .map(Some),
        );
        for alpha in alphas {
            let runs = of(alpha);
            let at_window: Vec<&RunRecord> = (runs.iter().copied())
                .filter(|r| window.contains(&r.lr.to_bits()))
                .collect();
            points.push(SlowdownPoint {
                optimizer: optimizer.clone(),
                alpha: alpha.unwrap_or(1.0),
                paper: best(&at_window).map(|b| b.0),
                sweep: best(&runs).map(|b| b.0),
            });
        }
    }
    points
}

/// Both tables, or None where the records hold no undefended model beside a defended one.
pub fn slowdown_table(records: &[RunRecord]) -> Option<String> {
    let plain: Vec<&RunRecord> = (records.iter())
        .filter(|r| !r.is_benign() && r.adaptive.is_none())
        .collect();
    let models = distinct(plain.iter().map(|r| r.defense_label()));
    if !models.iter().any(|m| m == "none") || models.len() < 2 {
        return None;
    }
    let defended: Vec<&String> = models.iter().filter(|m| *m != "none").collect();
    let width = models.iter().map(String::len).fold(14, usize::max);
    let runs_of = |model: &str, optimizer: &str| -> Vec<&RunRecord> {
        (plain.iter().copied())
            .filter(|r| r.defense_label() == model && r.optimizer == optimizer)
            .collect()
    };
    let mut out = String::from(
        "the paper's table: steps to target/harmful accuracy at the learning rates where the \
         undefended model succeeds (paper protocol; Nc: collapsed, div@N: diverged)\n",
    );
    for optimizer in distinct(plain.iter().map(|r| r.optimizer.clone())) {
        let undefended = runs_of("none", &optimizer);
        let mut lrs: Vec<f64> = (undefended.iter())
            .filter(|r| r.steps_to_success().is_some())
            .map(|r| r.lr)
            .collect();
        lrs.sort_by(f64::total_cmp);
        if lrs.is_empty() {
            let _ = writeln!(
                out,
                "{optimizer}: no undefended success, so no paper-protocol rate"
            );
            continue;
        }
        let _ = write!(out, "{optimizer:<10} {:<width$}", "model");
        for lr in &lrs {
            let _ = write!(out, " {:>11}", format!("lr {lr:.0e}"));
        }
        out.push('\n');
        for model in &models {
            let _ = write!(out, "{:<10} {model:<width$}", "");
            let runs = runs_of(model, &optimizer);
            for lr in &lrs {
                let text = (runs.iter())
                    .find(|r| r.lr == *lr)
                    .map_or("-".to_string(), |r| cell(r));
                let _ = write!(out, " {text:>11}");
            }
            out.push('\n');
        }
    }
    out.push_str(
        "\nsteps-to-target ratio, defended over undefended, at each attacker's best learning rate \
         in the whole grid (adaptive sweep; never: no success at any rate)\n",
    );
    let _ = write!(out, "{:<10} {:>16}", "optimizer", "undefended");
    // At least 24 wide, and as wide as a long label (a stack's).
    let widths: Vec<usize> = defended.iter().map(|m| (m.len() + 2).max(24)).collect();
    for (model, width) in defended.iter().zip(&widths) {
        let _ = write!(out, " {model:>width$}");
    }
    out.push('\n');
    for optimizer in distinct(plain.iter().map(|r| r.optimizer.clone())) {
        let Some((free_steps, free_lr)) = best(&runs_of("none", &optimizer)) else {
            let _ = writeln!(out, "{optimizer:<10} {:>16}", "never");
            continue;
        };
        let _ = write!(
            out,
            "{optimizer:<10} {:>16}",
            format!("{free_steps} @{free_lr:.0e}")
        );
        for (model, width) in defended.iter().zip(&widths) {
            let text = match best(&runs_of(model, &optimizer)) {
                Some((steps, lr)) => {
                    format!(
                        "{:.2}x ({steps} @{lr:.0e})",
                        steps as f64 / free_steps as f64
                    )
                }
                None => "never".to_string(),
            };
            let _ = write!(out, " {text:>width$}");
        }
        out.push('\n');
    }
    Some(out)
}
