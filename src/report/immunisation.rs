//! The immunisation report (PAPER.md section 6), per defence: resistance (what the attacks
//! needed), stability (utility changed by the defence), generalisation (the strongest attack's
//! accuracy on harmful images no attack was judged on, beside the accuracy it was chosen by)
//! and trainability (does benign fine-tuning still work, and at which learning rate).

use super::{distinct, success_windows};
use crate::record::RunRecord;
use std::fmt::Write;

fn window_text(lowest: Option<f64>, highest: Option<f64>, steps: Option<usize>) -> String {
    match (lowest, highest, steps) {
        (Some(lo), Some(hi), Some(s)) => format!("{lo:.0e}..{hi:.0e} ({s} steps)"),
        _ => "none".to_string(),
    }
}

pub fn immunisation_table(records: &[RunRecord]) -> String {
    let plain: Vec<RunRecord> = (records.iter())
        .filter(|r| r.adaptive.is_none())
        .cloned()
        .collect();
    let windows = success_windows(&plain);
    let defences = distinct(
        plain
            .iter()
            .filter(|r| !r.is_benign())
            .map(RunRecord::defended_model_label),
    );
    let mut out = String::new();
    for defence in defences {
        let attacks: Vec<&RunRecord> = (plain.iter())
            .filter(|r| !r.is_benign() && r.defended_model_label() == defence)
            .collect();
        let Some(first) = attacks.first() else {
            continue;
        };
        let _ = writeln!(out, "{defence}");
        // Resistance: each optimiser's window on the harmful task.
        let windows_of = |label: &str| -> Vec<String> {
            (windows.iter())
                .filter(|w| w.defense == label)
                .map(|w| {
                    let window = window_text(w.lowest, w.highest, w.fewest_steps);
                    format!("{} {window}", w.optimizer)
                })
                .collect()
        };
        let resistance = windows_of(&defence);
        let _ = writeln!(out, "  resistance      {}", resistance.join("; "));
        let _ = writeln!(
            out,
            "  stability       utility {:.3} -> {:.3} ({:+.3})",
            first.utility_before_defense,
            first.utility_after_defense,
            first.utility_after_defense - first.utility_before_defense
        );
        // Generalisation: the attack the judged set picks (highest final accuracy on it).
        let chosen = (attacks.iter()).max_by(|a, b| {
            a.final_harmful_accuracy
                .total_cmp(&b.final_harmful_accuracy)
        });
        let generalisation = match chosen.and_then(|r| r.heldout_harmful_accuracy.map(|h| (r, h))) {
            Some((r, heldout)) => format!(
                "strongest attack ({} lr={:.0e}): {:.3} on the images it was judged on, {heldout:.3} \
                 on held-out ones",
                r.optimizer, r.lr, r.final_harmful_accuracy
            ),
            None => "not measured (no held-out harmful set: the digits scenario's data.heldout_fraction = 0)".to_string(),
        };
        let _ = writeln!(out, "  generalisation  {generalisation}");
        let trainability = windows_of(&format!("{defence} (benign)"));
        let _ = writeln!(
            out,
            "  trainability    {}",
            if trainability.is_empty() {
                "not measured (no [trainability] runs)".to_string()
            } else {
                format!("benign task {}", trainability.join("; "))
            }
        );
    }
    out.push_str(
        "resistance and trainability: learning rates that succeeded, reaching the target and keeping utility (fewest steps); \
         benign task (digits scenario): the utility digits mirrored, target on their mirrored held-out images\n",
    );
    out
}
