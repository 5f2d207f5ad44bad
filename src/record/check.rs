//! A run record read from outside (a results file, a sweep's record, a merge's input) checked
//! against what every record the runner writes satisfies: numbers in their ranges, the outcome
//! agreeing with its own curves, text without control characters. A record that fails is
//! refused naming the field, so a hand-edited or corrupted file never reaches a table or a
//! claim.

use super::RunRecord;

/// The largest alpha a scenario may ask for, and so a record may carry: f64 compensates alphas
/// up to about 1e11 (`F64_COMPENSATION_BOUND`); larger ones would be refused only after
/// pretraining.
pub const MAX_ALPHA: f64 = 1e12;

/// The largest learning rate a scenario may ask for (`attack.lr_grid`, `pretrain.lr`, a random
/// search's range), and so the largest a record may carry: far above any rate that trains, far
/// below where doubling it for a plot's margin overflows.
pub const MAX_LR: f64 = 1e6;

impl RunRecord {
    /// Ok where the record is one the runner could have written; else the first field that
    /// says otherwise and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema != super::RECORD_SCHEMA {
            return Err(format!(
                "schema {:?}, expected {:?}",
                self.schema,
                super::RECORD_SCHEMA
            ));
        }
        for (field, text) in [
            ("scenario", self.scenario.as_str()),
            ("variant", self.variant.as_deref().unwrap_or_default()),
            ("defense", &self.defense),
            ("optimizer", &self.optimizer),
            ("engine", &self.engine),
            ("adapter", &self.adapter),
            ("task", &self.task),
            ("adaptive", self.adaptive.as_deref().unwrap_or_default()),
        ] {
            if let Some(c) = crate::printable::unprintable_char(text) {
                return Err(format!(
                    "{field} holds control characters or invisible ones ({c:?}): {text:?}"
                ));
            }
        }
        if let Some(release) = &self.release
            && !["new-classes", "relearning"].contains(&release.as_str())
        {
            return Err(format!(
                "release = {release:?}: expected \"new-classes\" or \"relearning\""
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= MAX_LR) {
            return Err(format!("lr = {}: must be in (0, {MAX_LR:e}]", self.lr));
        }
        if let Some(alpha) = self.alpha
            && !(1.0..=MAX_ALPHA).contains(&alpha)
        {
            return Err(format!(
                "alpha = {alpha}: must be in [1, {:e}], as a scenario's",
                MAX_ALPHA
            ));
        }
        if self.k == Some(0) {
            return Err("k = 0: a defence keeps at least one direction".to_string());
        }
        let defense = self
            .defense_value()
            .map_err(|e| format!("defense_params: {e}"))?;
        if defense.name() != self.defense || defense.alpha() != self.alpha {
            return Err(format!(
                "defense = {:?} with alpha {:?}, but defense_params describes {}",
                self.defense,
                self.alpha,
                defense.label()
            ));
        }
        for (field, value) in [
            ("function_error_max", self.function_error_max),
            ("function_error_mean", self.function_error_mean),
            ("wall_ms", self.wall_ms),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{field} = {value}: must be a non-negative number"));
            }
        }
        let accuracies = [
            ("target_accuracy", Some(self.target_accuracy)),
            ("final_harmful_accuracy", Some(self.final_harmful_accuracy)),
            ("heldout_harmful_accuracy", self.heldout_harmful_accuracy),
            ("harmful_accuracy_released", self.harmful_accuracy_released),
            ("utility_before_defense", Some(self.utility_before_defense)),
            ("utility_after_defense", Some(self.utility_after_defense)),
            ("utility_after_attack", Some(self.utility_after_attack)),
        ];
        for (field, value) in accuracies {
            if let Some(value) = value
                && !(0.0..=1.0).contains(&value)
            {
                return Err(format!("{field} = {value}: an accuracy is in [0, 1]"));
            }
        }
        if self.steps == 0 || self.eval_every == 0 || self.batch_size == Some(0) {
            return Err("steps, eval_every and batch_size must be at least 1".to_string());
        }
        if self.steps_run > self.steps {
            return Err(format!(
                "steps_run = {} is more than the budget steps = {}",
                self.steps_run, self.steps
            ));
        }
        if let Some(loss) = self.final_loss
            && loss < 0.0
        {
            return Err(format!(
                "final_loss = {loss}: a cross-entropy is not negative"
            ));
        }
        self.validate_collapse()?;
        self.validate_outcome()
    }

    /// The collapse flag against the utility losses it follows from (all three absent in older
    /// files).
    fn validate_collapse(&self) -> Result<(), String> {
        let (before, after) = (
            self.utility_loss_before_defense,
            self.utility_loss_after_attack,
        );
        for (field, value) in [
            ("utility_loss_before_defense", before),
            ("utility_loss_after_attack", after),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!(
                    "{field} = {v}: a cross-entropy is a non-negative number"
                ));
            }
        }
        match (self.collapsed, before) {
            (None, None) if after.is_none() => Ok(()),
            (Some(collapsed), Some(before)) if collapsed == super::is_collapse(before, after) => {
                Ok(())
            }
            _ => Err(format!(
                "collapsed = {:?} disagrees with utility_loss_before_defense = {before:?} and \
                 utility_loss_after_attack = {after:?} (collapsed: after - before > ln 2, or \
                 after absent)",
                self.collapsed
            )),
        }
    }

    /// The outcome fields against the curves: the run stops at the first evaluation that reaches
    /// the target or diverges, or at the budget.
    fn validate_outcome(&self) -> Result<(), String> {
        if self.reached_target != self.steps_to_target.is_some() {
            return Err(format!(
                "reached_target = {} disagrees with steps_to_target = {:?}",
                self.reached_target, self.steps_to_target
            ));
        }
        if self.diverged != self.diverged_at.is_some() {
            return Err(format!(
                "diverged = {} disagrees with diverged_at = {:?}",
                self.diverged, self.diverged_at
            ));
        }
        if self.reached_target && self.diverged {
            return Err("a run cannot both reach the target and diverge".to_string());
        }
        let steps: Vec<usize> = self.accuracy_curve.iter().map(|p| p.0).collect();
        let loss_steps: Vec<usize> = self.loss_curve.iter().map(|p| p.0).collect();
        if steps.is_empty() || steps != loss_steps {
            return Err(
                "accuracy_curve and loss_curve must be evaluated at the same steps, at least one"
                    .to_string(),
            );
        }
        // From step 0 since the model before any update is evaluated; older files start at the
        // first evaluation.
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the curves' steps must rise".to_string());
        }
        let (last_step, last_accuracy) = self.accuracy_curve[self.accuracy_curve.len() - 1];
        if last_step != self.steps_run {
            return Err(format!(
                "steps_run = {} but the curves end at step {last_step}",
                self.steps_run
            ));
        }
        if let Some((step, accuracy)) =
            (self.accuracy_curve.iter()).find(|p| !(0.0..=1.0).contains(&p.1))
        {
            return Err(format!(
                "accuracy_curve at step {step}: {accuracy} is not in [0, 1]"
            ));
        }
        if let Some((step, loss)) = (self.loss_curve.iter()).find(|p| p.1.is_some_and(|l| l < 0.0))
        {
            return Err(format!("loss_curve at step {step}: {loss:?} is negative"));
        }
        if last_accuracy != self.final_harmful_accuracy {
            return Err(format!(
                "final_harmful_accuracy = {} but the accuracy curve ends at {last_accuracy}",
                self.final_harmful_accuracy
            ));
        }
        let stopped_at = self.steps_to_target.or(self.diverged_at);
        if let Some(step) = stopped_at
            && step != self.steps_run
        {
            return Err(format!(
                "the run stopped at step {step} (steps_to_target / diverged_at) but steps_run = {}",
                self.steps_run
            ));
        }
        if stopped_at.is_none() && self.steps_run != self.steps {
            return Err(format!(
                "the run neither reached the target nor diverged, yet stopped at step {} of {}",
                self.steps_run, self.steps
            ));
        }
        let target = self.target_accuracy;
        let before_last = &self.accuracy_curve[..self.accuracy_curve.len() - 1];
        if let Some((step, accuracy)) = before_last.iter().find(|p| p.1 >= target) {
            return Err(format!(
                "accuracy_curve reaches the target {target} at step {step} ({accuracy}), but the \
                 run went on past it"
            ));
        }
        if !self.diverged && self.reached_target != (last_accuracy >= target) {
            return Err(format!(
                "reached_target = {} but the last accuracy {last_accuracy} is {} the target {target}",
                self.reached_target,
                if last_accuracy >= target {
                    "at or above"
                } else {
                    "below"
                }
            ));
        }
        Ok(())
    }
}
