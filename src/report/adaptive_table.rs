//! The adaptive attacks at a glance (PAPER.md section 5): for each rewritten model, what it
//! cost in parameters and what it bought the attacker, beside the undefended and the defended
//! model it started from, under the same optimisers.

use super::{distinct, success_windows};
use crate::record::RunRecord;
use std::fmt::Write;

/// None where the records hold no adaptive attack.
pub fn adaptive_table(records: &[RunRecord]) -> Option<String> {
    let adaptive: Vec<&RunRecord> = records.iter().filter(|r| r.adaptive.is_some()).collect();
    if adaptive.is_empty() {
        return None;
    }
    let optimizers = distinct(adaptive.iter().map(|r| r.optimizer.clone()));
    let undefended = records
        .iter()
        .find(|r| r.is_undefended() && r.adaptive.is_none())
        .map(|r| r.parameter_count);
    // The reference rows first: the undefended model and each attacked defence as it stands.
    let alphas = distinct(adaptive.iter().filter_map(|r| r.alpha.map(f64::to_bits)));
    let is_reference = |r: &RunRecord| {
        r.adaptive.is_none()
            && (r.is_undefended() || r.alpha.is_some_and(|a| alphas.contains(&a.to_bits())))
    };
    let shown: Vec<&RunRecord> = (records.iter())
        .filter(|r| !r.is_benign() && (is_reference(r) || r.adaptive.is_some()))
        .filter(|r| optimizers.contains(&r.optimizer))
        .collect();
    let labels = distinct(shown.iter().map(|r| r.defense_label()));
    let width = labels.iter().map(String::len).max().unwrap_or(5).max(5);
    let owned: Vec<RunRecord> = shown.iter().map(|r| (*r).clone()).collect();
    let windows = success_windows(&owned);

    let mut out = format!(
        "adaptive attacks: parameters, the rewrite's overhead, and the success window (lr) / \
         fewest steps per optimiser\n{:<width$} {:>9} {:>11} {:>11}",
        "model", "params", "+defended", "+undefended"
    );
    for optimizer in &optimizers {
        let _ = write!(out, "  {:>24}", format!("{optimizer}: window / best"));
    }
    out.push('\n');
    for label in &labels {
        let Some(first) = shown.iter().find(|r| &r.defense_label() == label) else {
            continue;
        };
        let over_defended = first
            .adaptive_overhead
            .map_or("-".to_string(), |n| format!("{n:+}"));
        let over_undefended = undefended.map_or("-".to_string(), |u| {
            format!("{:+}", first.parameter_count as i64 - u as i64)
        });
        let _ = write!(
            out,
            "{label:<width$} {:>9} {over_defended:>11} {over_undefended:>11}",
            first.parameter_count
        );
        for optimizer in &optimizers {
            let text = windows
                .iter()
                .find(|w| &w.defense == label && &w.optimizer == optimizer)
                .map_or("-".to_string(), |w| {
                    match (w.lowest, w.highest, w.fewest_steps) {
                        (Some(lo), Some(hi), Some(steps)) => {
                            format!("{lo:.0e}..{hi:.0e} / {steps}")
                        }
                        _ => "none".to_string(),
                    }
                });
            let _ = write!(out, "  {text:>24}");
        }
        out.push('\n');
    }
    out.push_str(
        "+defended: parameters the rewrite added to the defended model; +undefended: over the \
         undefended model\n",
    );
    Some(out)
}
