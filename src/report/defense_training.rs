//! The baseline defences' training curves as a CSV (`defense_training.csv` in a result folder):
//! one row per point of each curve, each trained defence once (a stack shares its baseline's
//! training), so anyone can plot how a baseline trained and what its own measure did (TAR's
//! tamper-resistance loss, immunisation's condition numbers).

use crate::record::csv_text;
use crate::scenario::DefenseSummary;

pub const DEFENSE_TRAINING_HEADER: &str = "defense,defense_params,curve,step,value";

/// The CSV of every trained defence's curves, or None where no defence was trained.
pub fn defense_training_csv(defenses: &[DefenseSummary]) -> Option<String> {
    let mut seen = Vec::new();
    let mut out = format!("{DEFENSE_TRAINING_HEADER}\n");
    for summary in defenses {
        let Some(trained) = summary.defense.trained_part() else {
            continue;
        };
        if summary.training.is_empty() || seen.contains(&trained) {
            continue;
        }
        seen.push(trained);
        let (label, params) = (
            csv_text(&trained.label()),
            csv_text(&trained.params().to_string()),
        );
        for curve in &summary.training {
            for (step, value) in &curve.points {
                out.push_str(&format!("{label},{params},{},{step},{value}\n", curve.name));
            }
        }
    }
    (!seen.is_empty()).then_some(out)
}
