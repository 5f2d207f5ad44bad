//! The precision frontier (PAPER.md 3): up to which alpha an engine's arithmetic still computes
//! the defended model's function. Computing `C (W~ x)` costs a relative error of about
//! `alpha * u` (u the unit roundoff), so f32 loses the function somewhere past 1e6 and f64 keeps
//! it to 1e9 and beyond; the frontier is read from the records, per engine.

use crate::defense::CompensationForm;
use crate::record::RunRecord;

/// The paper's utility bar: the defended model's utility-task accuracy within about one point
/// of the released model's.
pub const UTILITY_POINT: f64 = 0.01;

/// One engine's frontier over the compensated SpecDef models of the records (no rewrite).
#[derive(Clone, Debug, PartialEq)]
pub struct Frontier {
    pub engine: String,
    /// The largest alpha whose model keeps utility within a point, with its largest relative
    /// output error against the undefended model in f64.
    pub kept_up_to: Option<(f64, f64)>,
    /// The smallest alpha whose model does not, with its utility change.
    pub lost_from: Option<(f64, f64)>,
}

impl Frontier {
    /// `cpu-f32: utility kept up to alpha 1e6 (max rel. error 6.0e-2), lost from 1e7 (-0.800)`.
    pub fn describe(&self) -> String {
        let kept = match self.kept_up_to {
            Some((alpha, error)) => {
                format!("utility kept up to alpha {alpha:.0e} (max rel. error {error:.1e})")
            }
            None => "utility kept at no alpha".to_string(),
        };
        let lost = match self.lost_from {
            Some((alpha, change)) => format!(", lost from {alpha:.0e} ({change:+.3})"),
            None => ", lost at none measured".to_string(),
        };
        format!("{}: {kept}{lost}", self.engine)
    }
}

/// The frontier of every engine the records ran on, in the order first seen. Only SpecDef
/// with its compensation counts (the ablation loses the function by design).
pub fn frontiers(records: &[RunRecord]) -> Vec<Frontier> {
    let mut out: Vec<Frontier> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for r in records {
        let Some(alpha) = r.alpha else { continue };
        let label = r.defense_label();
        if !r.is_spec_def_in(CompensationForm::Full) || r.adaptive.is_some() || r.is_benign() {
            continue;
        }
        if seen.contains(&(r.engine.clone(), label.clone())) {
            continue;
        }
        seen.push((r.engine.clone(), label));
        let at = match out.iter().position(|f| f.engine == r.engine) {
            Some(at) => at,
            None => {
                out.push(Frontier {
                    engine: r.engine.clone(),
                    kept_up_to: None,
                    lost_from: None,
                });
                out.len() - 1
            }
        };
        let frontier = &mut out[at];
        let change = r.utility_after_defense - r.utility_before_defense;
        if change.abs() <= UTILITY_POINT {
            if frontier.kept_up_to.is_none_or(|(a, _)| alpha > a) {
                frontier.kept_up_to = Some((alpha, r.function_error_max));
            }
        } else if frontier.lost_from.is_none_or(|(a, _)| alpha < a) {
            frontier.lost_from = Some((alpha, change));
        }
    }
    out
}
