//! Comparing two result files run for run: the reproducibility check across platforms. Runs are
//! matched by what was run (scenario, variant, seed, defence, attack settings), never by what ran
//! it; each metric then agrees or not within its own tolerance.

use crate::scenario::RunRecord;
use crate::tolerance::Tolerance;
use std::collections::BTreeMap;
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

/// The identity of a run: everything that defines it, nothing about what computed it. Fields
/// that older files lack count as their defaults then (the reference hyper-parameters, the
/// groups the `train_*` flags name plus the later groups, which trained by default).
fn run_key(r: &RunRecord) -> String {
    let default_decay = if r.optimizer == "adamw" { 0.01 } else { 0.0 };
    let hyper = format!(
        "b1={:e},b2={:e},eps={:e},m={:e},wd={:e}",
        r.beta1.unwrap_or(0.9),
        r.beta2.unwrap_or(0.999),
        r.eps.unwrap_or(1e-8),
        r.momentum.unwrap_or(0.9),
        r.weight_decay.unwrap_or(default_decay)
    );
    let trainable = if r.trainable.is_empty() {
        let flags = [
            (r.train_weights, "weights"),
            (r.train_biases, "biases"),
            (r.train_compensation, "compensation"),
        ];
        let mut groups: Vec<&str> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
        groups.extend(["factors", "injected", "lora"]);
        groups.join(",")
    } else {
        r.trainable.clone()
    };
    let groups = match r.optimizer_groups.as_str() {
        "" => "{}",
        g => g,
    };
    format!(
        "{}|{}|seed={}|trial={:?}|{}|alpha={:?}|k={:?}|layers={:?}|adaptive={}|task={}|{}|lr={:e}|{}|steps={}|batch={:?}|every={}|target={}|train={trainable}|{hyper}|groups={groups}|second_order={}",
        r.scenario,
        r.variant.clone().unwrap_or_default(),
        r.seed,
        r.trial,
        r.defense,
        r.alpha,
        r.k,
        r.layers,
        r.adaptive.as_deref().unwrap_or_default(),
        r.task,
        r.optimizer,
        r.lr,
        r.schedule,
        r.steps,
        r.batch_size,
        r.eval_every,
        r.target_accuracy,
        r.second_order.as_deref().unwrap_or_default(),
    )
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
    duplicates: &mut Vec<String>,
) -> BTreeMap<String, &'a RunRecord> {
    let mut map = BTreeMap::new();
    for r in records {
        if map.insert(run_key(r), r).is_some() {
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
    let mut duplicates = Vec::new();
    let (a, b) = (
        index_runs(first, &mut duplicates),
        index_runs(second, &mut duplicates),
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
        metrics,
    }
}
