//! Text tables for the terminal, shaped like the paper's main table: one row per defence and
//! optimiser, one column per learning rate, cells `steps/accuracy` (`>N/acc` when the target was
//! not reached in N steps, `div@N` when training diverged at step N).

use super::distinct;
use crate::scenario::{DefenseSummary, RunRecord, Success};
use std::fmt::Write;

/// A main-table cell: `steps/accuracy`, `Nc/acc` (collapsed), `>N/acc` or `div@N`.
pub(super) fn cell(r: &RunRecord) -> String {
    if let Some(step) = r.diverged_at {
        format!("div@{step}")
    } else if let Some(step) = r.steps_to_target
        && !r.succeeded(Success::KeepingUtility)
    {
        format!("{step}c/{:.2}", r.final_harmful_accuracy)
    } else if let Some(step) = r.steps_to_target {
        format!("{step}/{:.2}", r.final_harmful_accuracy)
    } else {
        format!(">{}/{:.2}", r.steps_run, r.final_harmful_accuracy)
    }
}

/// The defence column's width: the longest label (adaptive rewrites make long ones), at least 18.
fn label_width<T>(rows: impl IntoIterator<Item = (String, T)>) -> usize {
    rows.into_iter()
        .map(|(label, _)| label.len())
        .fold(18, usize::max)
}

pub fn main_table(records: &[RunRecord]) -> String {
    let lrs = distinct(records.iter().map(|r| r.lr));
    let rows = distinct(
        records
            .iter()
            .map(|r| (r.defense_label(), r.optimizer.clone())),
    );
    let width = label_width(rows.iter().map(|(d, _)| (d.clone(), ())));
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<width$} {:<10} {:>7} {:>7}",
        "defence", "optimizer", "util0", "util1"
    );
    for lr in &lrs {
        let _ = write!(out, " {:>11}", format!("{lr:.0e}"));
    }
    out.push('\n');
    for (defense, optimizer) in rows {
        let runs: Vec<&RunRecord> = records
            .iter()
            .filter(|r| r.defense_label() == defense && r.optimizer == optimizer)
            .collect();
        let Some(first) = runs.first() else { continue };
        let _ = write!(
            out,
            "{defense:<width$} {optimizer:<10} {:>7.3} {:>7.3}",
            first.utility_before_defense, first.utility_after_defense
        );
        for lr in &lrs {
            let text = runs
                .iter()
                .find(|r| r.lr == *lr)
                .map_or("-".to_string(), |r| cell(r));
            let _ = write!(out, " {text:>11}");
        }
        out.push('\n');
    }
    out.push_str(
        "cells: steps to target/harmful accuracy; >N: target not reached in N steps; div@N: diverged at step N;\n\
         Nc: reached the target at step N but collapsed (utility cross-entropy up by more than ln 2: no success)\n\
         util0: utility before the defence; util1: after it (held-out utility-task accuracy)\n",
    );
    out
}

/// The lowest and highest learning rate that succeeded (reached the target and kept utility),
/// per defence and optimiser.
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessWindow {
    pub defense: String,
    pub optimizer: String,
    pub lowest: Option<f64>,
    pub highest: Option<f64>,
    pub fewest_steps: Option<usize>,
    /// Runs that reached the target but collapsed: not in the window.
    pub collapsed: usize,
}

pub fn success_windows(records: &[RunRecord]) -> Vec<SuccessWindow> {
    distinct(
        records
            .iter()
            .map(|r| (r.defense_label(), r.optimizer.clone())),
    )
    .into_iter()
    .map(|(defense, optimizer)| {
        let runs =
            (records.iter()).filter(|r| r.defense_label() == defense && r.optimizer == optimizer);
        let reached: Vec<&RunRecord> = (runs.clone())
            .filter(|r| r.succeeded(Success::KeepingUtility))
            .collect();
        SuccessWindow {
            collapsed: runs.filter(|r| r.reached_target).count() - reached.len(),
            lowest: reached.iter().map(|r| r.lr).reduce(f64::min),
            highest: reached.iter().map(|r| r.lr).reduce(f64::max),
            fewest_steps: reached.iter().filter_map(|r| r.steps_to_target).min(),
            defense,
            optimizer,
        }
    })
    .collect()
}

pub fn success_window_table(records: &[RunRecord]) -> String {
    let windows = success_windows(records);
    let width = label_width(windows.iter().map(|w| (w.defense.clone(), ())));
    let mut out = format!(
        "{:<width$} {:<10} {:>21} {:>12} {:>10}\n",
        "defence", "optimizer", "success window (lr)", "best steps", "collapsed"
    );
    for w in windows {
        let window = match (w.lowest, w.highest) {
            (Some(lo), Some(hi)) => format!("{lo:.0e} .. {hi:.0e}"),
            _ => "none".to_string(),
        };
        let steps = w.fewest_steps.map_or("-".to_string(), |s| s.to_string());
        let _ = writeln!(
            out,
            "{:<width$} {:<10} {window:>21} {steps:>12} {:>10}",
            w.defense, w.optimizer, w.collapsed
        );
    }
    out.push_str(
        "a success reaches the target and keeps utility (the paper's collapse criterion); \
         collapsed: runs that reached it without\n",
    );
    out
}

/// Function preservation per defence and engine: max / mean relative output error against the
/// undefended model in f64. A defence summarised twice (attacked on the harmful task, then
/// fine-tuned on the benign one) is shown once.
pub fn precision_table(defenses: &[DefenseSummary]) -> String {
    let mut seen = Vec::new();
    let defenses: Vec<&DefenseSummary> = (defenses.iter())
        .filter(|d| {
            let new = !seen.contains(&&d.label);
            seen.push(&d.label);
            new
        })
        .collect();
    let engines = distinct(
        defenses
            .iter()
            .flat_map(|d| d.function_error.iter().map(|e| e.0.clone())),
    );
    let width = label_width(defenses.iter().map(|d| (d.label.clone(), ())));
    let mut out = format!("{:<width$} {:>10}", "defence", "params");
    for engine in &engines {
        let _ = write!(out, " {:>21}", format!("{engine} max/mean"));
    }
    out.push('\n');
    for d in defenses {
        let _ = write!(out, "{:<width$} {:>10}", d.label, d.parameter_count);
        for engine in &engines {
            let text = d
                .function_error
                .iter()
                .find(|e| &e.0 == engine)
                .map_or("-".to_string(), |(_, max, mean)| {
                    format!("{max:.1e}/{mean:.1e}")
                });
            let _ = write!(out, " {text:>21}");
        }
        out.push('\n');
    }
    out
}
