//! Comparing two result files run for run: the reproducibility check across platforms. Runs are
//! matched by what was run (scenario, variant, seed, defence, attack settings), never by what ran
//! it, on the fields both files carry (a file of an older version lacks the later ones; the
//! report names those left out); each metric then agrees or not within its own tolerance.

use crate::record::RunRecord;
use crate::tolerance::Tolerance;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// How close two runs must be. Steps to target are measured at evaluation points, so the band is
/// in steps; losses compare with rel + abs; accuracies with an absolute difference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompareSettings {
    pub steps_band: usize,
    pub loss: Tolerance,
    pub accuracy_abs: f64,
    /// Judge only the outcome of each attack (`OUTCOME_METRICS`) and report the other metrics
    /// without judging them: across precisions (f32 against f64) the losses of a defended model
    /// at large alpha differ by the defence's own rounding error, amplified by training, and runs
    /// at unstable learning rates blow up differently, while whether and when the attacker
    /// succeeds is what the paper's claims rest on.
    pub outcomes_only: bool,
}

impl Default for CompareSettings {
    fn default() -> Self {
        Self {
            steps_band: 0,
            loss: Tolerance::new(1e-3, 1e-2),
            accuracy_abs: 0.02,
            outcomes_only: false,
        }
    }
}

impl CompareSettings {
    /// Refuses tolerances that would make the comparison fail open: a NaN tolerance makes
    /// every `|a - b| <= tol` false and so, where it is negated, every run agree; a negative
    /// one makes equal values disagree. The message names the command-line flag.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, value) in [
            ("--loss-rel", self.loss.rel),
            ("--loss-abs", self.loss.abs),
            ("--accuracy-abs", self.accuracy_abs),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{flag} must be a finite number >= 0, got {value}"));
            }
        }
        Ok(())
    }
}

/// The metrics `outcomes_only` judges.
pub const OUTCOME_METRICS: [&str; 3] =
    ["reached_target", "steps_to_target", "utility_after_defense"];

/// One field of a run's identity: its value, or None where the record does not carry it (a
/// file written before the field existed).
type KeyField = (&'static str, Option<String>);

/// The identity of a run: everything that defines it, nothing about what computed it.
fn key_fields(r: &RunRecord) -> Vec<KeyField> {
    fn text<T: std::fmt::Debug>(v: T) -> Option<String> {
        Some(format!("{v:?}"))
    }
    let float = |v: Option<f64>| v.map(|v| format!("{v:e}"));
    let nonempty = |v: &str| (!v.is_empty()).then(|| v.to_string());
    vec![
        ("scenario", text(&r.scenario)),
        ("variant", text(&r.variant)),
        ("seed", text(r.seed)),
        ("trial", text(r.trial)),
        ("defense", text(&r.defense)),
        // Keys sorted (serde_json's map), so equal parameters print equal.
        (
            "defense_params",
            r.defense_params.as_ref().map(|p| p.to_string()),
        ),
        ("compensation_form", r.compensation_form.clone()),
        ("alpha", text(r.alpha)),
        ("k", text(r.k)),
        ("k_per_layer", r.k_per_layer.clone()),
        ("layers", text(&r.layers)),
        ("adaptive", text(&r.adaptive)),
        ("task", text(&r.task)),
        ("optimizer", text(&r.optimizer)),
        ("lr", float(Some(r.lr))),
        ("schedule", text(&r.schedule)),
        ("steps", text(r.steps)),
        ("batch_size", text(r.batch_size)),
        ("eval_every", text(r.eval_every)),
        ("target_accuracy", float(Some(r.target_accuracy))),
        (
            "train_weights, train_biases, train_compensation",
            text((r.train_weights, r.train_biases, r.train_compensation)),
        ),
        ("trainable", nonempty(&r.trainable)),
        ("beta1", float(r.beta1)),
        ("beta2", float(r.beta2)),
        ("eps", float(r.eps)),
        ("momentum", float(r.momentum)),
        ("weight_decay", float(r.weight_decay)),
        ("optimizer_groups", nonempty(&r.optimizer_groups)),
        ("second_order", r.second_order.clone()),
    ]
}

/// The key fields some record of `records` carries.
fn carried(records: &[RunRecord]) -> BTreeSet<&'static str> {
    (records.iter())
        .flat_map(key_fields)
        .filter_map(|(name, value)| value.map(|_| name))
        .collect()
}

/// A run's key over the fields `used`.
fn run_key(r: &RunRecord, used: &BTreeSet<&'static str>) -> String {
    (key_fields(r).into_iter())
        .filter(|(name, _)| used.contains(name))
        .map(|(name, value)| format!("{name}={}", value.as_deref().unwrap_or("-")))
        .collect::<Vec<_>>()
        .join("|")
}

fn short_name(r: &RunRecord) -> String {
    let name = format!("{} {} lr={:.0e}", r.defense_label(), r.optimizer, r.lr);
    match r.trial {
        Some(trial) => format!("{name} (seed {}, trial {trial})", r.seed),
        None => name,
    }
}

/// Agreement on one metric over all matched runs.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSummary {
    pub metric: &'static str,
    /// false: reported only (see `CompareSettings::outcomes_only`).
    pub judged: bool,
    pub agreed: usize,
    pub compared: usize,
    /// "run: a vs b" for each disagreement.
    pub disagreements: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub engines: (String, String),
    pub matched: usize,
    pub only_in_first: Vec<String>,
    pub only_in_second: Vec<String>,
    pub duplicates: Vec<String>,
    /// Key fields only one file carries (one was written before they existed): runs were
    /// matched without them.
    pub unused_key_fields: Vec<&'static str>,
    pub metrics: Vec<MetricSummary>,
}

impl Comparison {
    pub fn all_agree(&self) -> bool {
        self.only_in_first.is_empty()
            && self.only_in_second.is_empty()
            && self.duplicates.is_empty()
            && self.matched > 0
            && self
                .metrics
                .iter()
                .all(|m| !m.judged || m.agreed == m.compared)
    }

    pub fn report(&self) -> String {
        let mut out = format!(
            "comparing {} against {}: {} runs matched\n",
            self.engines.0, self.engines.1, self.matched
        );
        if !self.unused_key_fields.is_empty() {
            let _ = writeln!(
                out,
                "matched without {}: only one file carries them (it was written by a version \
                 that records them)",
                self.unused_key_fields.join(", ")
            );
        }
        for (what, names) in [
            ("only in the first file", &self.only_in_first),
            ("only in the second file", &self.only_in_second),
            ("listed twice", &self.duplicates),
        ] {
            if !names.is_empty() {
                let _ = writeln!(out, "{} runs {what}: {}", names.len(), names.join("; "));
            }
        }
        for m in &self.metrics {
            let verdict = match (m.judged, m.agreed == m.compared) {
                (false, _) => "info",
                (true, true) => "ok  ",
                (true, false) => "DIFF",
            };
            let _ = writeln!(
                out,
                "{verdict} {:<24} {}/{} agree",
                m.metric, m.agreed, m.compared
            );
            for d in m.disagreements.iter().take(10) {
                let _ = writeln!(out, "       {d}");
            }
            if m.disagreements.len() > 10 {
                let _ = writeln!(out, "       (+{} more)", m.disagreements.len() - 10);
            }
        }
        let _ = writeln!(
            out,
            "{}",
            if self.all_agree() {
                "all runs agree"
            } else {
                "the files disagree"
            }
        );
        out
    }
}

type Check = fn(&RunRecord, &RunRecord, &CompareSettings) -> Result<(), String>;

fn option_text<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("none".to_string(), |v| v.to_string())
}

const CHECKS: [(&str, Check); 7] = [
    ("reached_target", |a, b, _| {
        (a.reached_target == b.reached_target)
            .then_some(())
            .ok_or_else(|| format!("{} vs {}", a.reached_target, b.reached_target))
    }),
    ("steps_to_target", |a, b, s| {
        match (a.steps_to_target, b.steps_to_target) {
            (Some(x), Some(y)) if x.abs_diff(y) <= s.steps_band => Ok(()),
            (None, None) => Ok(()),
            (x, y) => Err(format!("{} vs {}", option_text(x), option_text(y))),
        }
    }),
    ("diverged", |a, b, _| {
        (a.diverged == b.diverged).then_some(()).ok_or_else(|| {
            format!(
                "{} vs {}",
                option_text(a.diverged_at),
                option_text(b.diverged_at)
            )
        })
    }),
    ("final_loss", |a, b, s| match (a.final_loss, b.final_loss) {
        (Some(x), Some(y)) => s
            .loss
            .check(&[x], &[y])
            .map(|_| ())
            .map_err(|_| format!("{x:e} vs {y:e}")),
        (None, None) => Ok(()),
        (x, y) => Err(format!("{} vs {}", option_text(x), option_text(y))),
    }),
    ("final_harmful_accuracy", |a, b, s| {
        let (x, y) = (a.final_harmful_accuracy, b.final_harmful_accuracy);
        ((x - y).abs() <= s.accuracy_abs)
            .then_some(())
            .ok_or_else(|| format!("{x:.3} vs {y:.3}"))
    }),
    ("utility_after_defense", |a, b, s| {
        let (x, y) = (a.utility_after_defense, b.utility_after_defense);
        ((x - y).abs() <= s.accuracy_abs)
            .then_some(())
            .ok_or_else(|| format!("{x:.3} vs {y:.3}"))
    }),
    ("utility_after_attack", |a, b, s| {
        let (x, y) = (a.utility_after_attack, b.utility_after_attack);
        ((x - y).abs() <= s.accuracy_abs)
            .then_some(())
            .ok_or_else(|| format!("{x:.3} vs {y:.3}"))
    }),
];

fn engine_of(records: &[RunRecord]) -> String {
    records.first().map_or("(empty)".to_string(), |r| {
        format!("{} on {}", r.engine, r.adapter)
    })
}

/// Runs by identity; a run listed twice is noted in `duplicates`.
fn index_runs<'a>(
    records: &'a [RunRecord],
    used: &BTreeSet<&'static str>,
    duplicates: &mut Vec<String>,
) -> BTreeMap<String, &'a RunRecord> {
    let mut map = BTreeMap::new();
    for r in records {
        if map.insert(run_key(r, used), r).is_some() {
            duplicates.push(short_name(r));
        }
    }
    map
}

pub fn compare(
    first: &[RunRecord],
    second: &[RunRecord],
    settings: &CompareSettings,
) -> Comparison {
    // Runs match on the key fields both files carry; the others are named in the report.
    let (in_first, in_second) = (carried(first), carried(second));
    let used: BTreeSet<&'static str> = in_first.intersection(&in_second).copied().collect();
    let unused_key_fields = in_first.symmetric_difference(&in_second).copied().collect();
    let mut duplicates = Vec::new();
    let (a, b) = (
        index_runs(first, &used, &mut duplicates),
        index_runs(second, &used, &mut duplicates),
    );
    let only = |x: &BTreeMap<String, &RunRecord>, y: &BTreeMap<String, &RunRecord>| {
        x.iter()
            .filter(|(k, _)| !y.contains_key(*k))
            .map(|(_, r)| short_name(r))
            .collect::<Vec<_>>()
    };
    let pairs: Vec<(&RunRecord, &RunRecord)> = a
        .iter()
        .filter_map(|(k, ra)| b.get(k).map(|rb| (*ra, *rb)))
        .collect();
    let metrics = CHECKS
        .iter()
        .map(|(metric, check)| {
            let disagreements: Vec<String> = pairs
                .iter()
                .filter_map(|(x, y)| {
                    check(x, y, settings)
                        .err()
                        .map(|e| format!("{}: {e}", short_name(x)))
                })
                .collect();
            MetricSummary {
                metric,
                judged: !settings.outcomes_only || OUTCOME_METRICS.contains(metric),
                agreed: pairs.len() - disagreements.len(),
                compared: pairs.len(),
                disagreements,
            }
        })
        .collect();
    Comparison {
        engines: (engine_of(first), engine_of(second)),
        matched: pairs.len(),
        only_in_first: only(&a, &b),
        only_in_second: only(&b, &a),
        duplicates,
        unused_key_fields,
        metrics,
    }
}
