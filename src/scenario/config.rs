//! Scenario files: TOML, unknown fields rejected, a base with named variants whose tables are
//! merged over the base (`[variants.quick]`). Errors name the file, the variant and the field.

use crate::attack::AdaptiveAttack;
use crate::defense::{CompensationForm, Defense, LayerSelection, SpecDef, Stacked};
use crate::model::{ModelSpec, ParamGroup, Trainable};
use crate::scenario::{MAX_LR, Release};
use crate::training::{
    GroupSettings, OptimizerHyper, OptimizerKind, Schedule, SecondOrderHyper, TrainSettings,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DEFAULT_SCENARIO: &str = include_str!("default.toml");

/// The most parameters a scenario's model may have (with a compensation layer on every layer):
/// a run keeps the host model in f64, the device model, gradients and optimiser state, so
/// 1e8 parameters already ask for several GB.
pub const MAX_PARAMETERS: u64 = 100_000_000;

/// The most learning rates one grid may hold.
pub const MAX_GRID_POINTS: usize = 10_000;

/// The smallest learning rate a grid may start at (alpha 1e9 moves SGD's window by alpha^2 to
/// about 1e-20).
pub const MIN_LR: f64 = 1e-30;

pub use crate::record::MAX_ALPHA;

/// The most optimisation steps of all a scenario's runs together (runs x steps): about a day of
/// the default model's steps on two CPU cores; more is a typo, not a study.
pub const MAX_TOTAL_STEPS: u64 = 100_000_000;

/// The most characters of a scenario's name (it names result files' records and tables).
pub const MAX_NAME_CHARS: usize = 100;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelSpec,
    /// How the released model is trained: on the utility task, or on every class before the
    /// suppression step of `release`.
    pub pretrain: TrainSettings,
    /// What the released model knew of the harmful task: never learned (`new-classes`, where
    /// absent) or learned and suppressed (`[release.relearning]`, the paper's setting).
    #[serde(default, skip_serializing_if = "Release::is_new_classes")]
    pub release: Release,
    pub defense: DefenseGrid,
    pub attack: AttackGrid,
    /// The adaptive attacker's rewrites (none unless the file asks).
    #[serde(default)]
    pub adaptive: AdaptiveGrid,
    /// Benign fine-tuning of every defence (none unless the file asks).
    #[serde(default)]
    pub trainability: TrainabilityGrid,
    /// `specdef sweep`'s seeds and search (one seed over the attack grid unless the file asks).
    #[serde(default, skip_serializing_if = "is_default_sweep")]
    pub sweep: super::SweepConfig,
}

fn is_default_sweep(sweep: &super::SweepConfig) -> bool {
    *sweep == super::SweepConfig::default()
}

/// Trainability (PAPER.md section 6): does benign fine-tuning still work under the defence, and
/// at which learning rate? The benign task: the utility digits mirrored left to right (the same
/// classes, a new input distribution), learned by every model of the defence grid with
/// `optimizers` over the attack grid's learning rates, to `target_accuracy` on the mirrored
/// held-out utility digits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainabilityGrid {
    /// Empty: no trainability runs.
    #[serde(default)]
    pub optimizers: Vec<OptimizerKind>,
    #[serde(default = "benign_target")]
    pub target_accuracy: f64,
}

fn benign_target() -> f64 {
    0.9
}

impl Default for TrainabilityGrid {
    fn default() -> Self {
        Self {
            optimizers: Vec::new(),
            target_accuracy: benign_target(),
        }
    }
}

/// The adaptive attacker (PAPER.md section 5): each attack rewrites the SpecDef-defended model
/// of each alpha (the defence grid's k, layers and compensation form) before fine-tuning over
/// the attack grid's learning rates with `optimizers`. LoRA on the weights also runs on the
/// undefended model, as the baseline its slowdown is measured against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveGrid {
    pub attacks: Vec<AdaptiveAttack>,
    /// The defences' alphas; the defence grid's where absent.
    #[serde(default)]
    pub alphas: Option<Vec<f64>>,
    #[serde(default = "first_order")]
    pub optimizers: Vec<OptimizerKind>,
}

fn first_order() -> Vec<OptimizerKind> {
    vec![OptimizerKind::Sgd, OptimizerKind::Adam]
}

impl Default for AdaptiveGrid {
    fn default() -> Self {
        Self {
            attacks: Vec::new(),
            alphas: None,
            optimizers: first_order(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub utility_classes: Vec<usize>,
    pub harmful_classes: Vec<usize>,
    pub test_fraction: f64,
    /// The share of the harmful test set held out from judging the attacks (generalisation:
    /// each attacked model is measured on it once, after the attack); 0 holds none out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub heldout_fraction: f64,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// The defences compared with the undefended model: SpecDef at each alpha, then any `extra`
/// SpecDef settings (for example the thin compensation form at one alpha).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenseGrid {
    pub alphas: Vec<f64>,
    pub k: usize,
    pub layers: LayerSelection,
    /// false: the ablation without compensation layers.
    #[serde(default = "yes")]
    pub compensate: bool,
    /// The compensation form of the alpha grid's defences (`full` or `thin`).
    #[serde(default)]
    pub compensation: CompensationForm,
    /// More defences, each with its own settings, after the alpha grid's.
    #[serde(default)]
    pub extra: Vec<SpecDef>,
    /// Where the defence's SVD runs: `host` (f64, faer; the default) or `engine` (the one-sided
    /// Jacobi SVD on the run's engine, WGSL on the GPU).
    #[serde(default)]
    pub svd: SvdPlacement,
    /// The baseline defences, each trained on the released model before its attacks
    /// (`{ kind = "rmu", ... }`; `defense/rmu.rs`), after SpecDef's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<Defense>,
    /// SpecDef at each of these alphas (with the grid's k, layers and compensation) on top of
    /// every baseline, after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack_alphas: Vec<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SvdPlacement {
    #[default]
    Host,
    Engine,
}

fn yes() -> bool {
    true
}

impl DefenseGrid {
    /// SpecDef at `alpha` with the grid's other settings.
    pub fn spec_def(&self, alpha: f64) -> SpecDef {
        SpecDef {
            alpha,
            k: self.k,
            layers: self.layers.clone(),
            compensate: self.compensate,
            compensation: self.compensation,
        }
    }

    /// The undefended model first, then SpecDef at each alpha, then the extra ones.
    pub fn defenses(&self) -> Vec<Defense> {
        std::iter::once(Defense::None)
            .chain(
                self.alphas
                    .iter()
                    .map(|&alpha| Defense::SpecDef(self.spec_def(alpha))),
            )
            .chain(self.extra.iter().cloned().map(Defense::SpecDef))
            .chain(self.baselines.iter().cloned())
            .chain(self.stacks())
            .collect()
    }

    /// SpecDef at each stack alpha on top of each baseline.
    fn stacks(&self) -> impl Iterator<Item = Defense> + '_ {
        (self.baselines.iter()).flat_map(move |baseline| {
            (self.stack_alphas.iter()).map(move |&alpha| {
                Defense::Stacked(Box::new(Stacked {
                    baseline: baseline.clone(),
                    spec_def: self.spec_def(alpha),
                }))
            })
        })
    }

    /// Each baseline is a training stage with settings that fit the model, named once.
    fn validate_baselines(&self, model: &crate::model::ModelSpec) -> Result<(), String> {
        for (i, defense) in self.baselines.iter().enumerate() {
            let field = format!("defense.baselines[{i}]");
            if let Defense::Stacked(_) = defense {
                return Err(format!(
                    "{field}: a stack is not a baseline (list the baseline and give \
                     defense.stack_alphas to put SpecDef on top of it)"
                ));
            }
            let Some(stage) = defense.training_stage() else {
                return Err(format!(
                    "{field}: kind {:?} is not a baseline (SpecDef goes in defense.alphas or \
                     defense.extra; the undefended model is always run)",
                    defense.name()
                ));
            };
            stage.validate(model).map_err(|e| format!("{field}: {e}"))?;
            if self.baselines[..i].contains(defense) {
                return Err(format!(
                    "{field} repeats an earlier baseline ({}): it would run twice",
                    defense.label()
                ));
            }
        }
        if !self.stack_alphas.is_empty() && self.baselines.is_empty() {
            return Err(
                "defense.stack_alphas puts SpecDef on top of the baselines, and \
                 defense.baselines is empty"
                    .to_string(),
            );
        }
        for &alpha in &self.stack_alphas {
            check_alpha("defense.stack_alphas", alpha)?;
        }
        if let Some(alpha) = first_repeat(&self.stack_alphas) {
            return Err(format!(
                "defense.stack_alphas names {alpha} twice: each would run twice"
            ));
        }
        Ok(())
    }
}

/// Learning rates: log-spaced from `from` to `to` with `per_decade` points per decade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrGrid {
    pub from: f64,
    pub to: f64,
    pub per_decade: usize,
}

impl LrGrid {
    pub fn values(&self) -> Vec<f64> {
        let (lo, hi) = (self.from.log10(), self.to.log10());
        let points = ((hi - lo) * self.per_decade as f64).round() as usize + 1;
        (0..points)
            .map(|i| {
                let exponent = lo + i as f64 / self.per_decade as f64;
                // Round to 3 significant digits so grids print and compare cleanly.
                let value = 10f64.powf(exponent);
                let digits = 10f64.powi(2 - value.log10().floor() as i32);
                (value * digits).round() / digits
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackGrid {
    pub optimizers: Vec<OptimizerKind>,
    pub lr_grid: LrGrid,
    pub steps: usize,
    #[serde(default = "crate::training::default_eval_every")]
    pub eval_every: usize,
    #[serde(default)]
    pub batch_size: Option<usize>,
    pub target_accuracy: f64,
    #[serde(default = "crate::training::default_schedule")]
    pub schedule: Schedule,
    #[serde(default)]
    pub trainable: Trainable,
    #[serde(default = "crate::training::default_divergence_loss")]
    pub divergence_loss: f64,
    /// Every optimiser's hyper-parameters (the reference implementations' by default).
    #[serde(default)]
    pub hyper: OptimizerHyper,
    /// Parameter groups trained otherwise than the run's optimiser (`[attack.groups.biases]
    /// optimizer = "adamw"`).
    #[serde(default)]
    pub groups: BTreeMap<ParamGroup, GroupSettings>,
    /// The second-order optimisers' hyper-parameters (`[attack.second_order.muon]`,
    /// `.adahessian`, `.sophia`, `.newton_cg`; the reference implementations' by default).
    #[serde(default, skip_serializing_if = "SecondOrderHyper::is_default")]
    pub second_order: SecondOrderHyper,
}

/// An alpha of a scenario's defences: at least 1 (it scales singular values up) and at most
/// `MAX_ALPHA`, so an alpha f64 cannot compensate is refused before pretraining, not after.
fn check_alpha(field: &str, alpha: f64) -> Result<(), String> {
    if alpha.is_finite() && (1.0..=MAX_ALPHA).contains(&alpha) {
        Ok(())
    } else {
        Err(format!(
            "{field}: alpha {alpha:e} is outside 1..{MAX_ALPHA:e} (it multiplies the top singular \
             values; beyond ~1e11 f64 cannot compensate it)"
        ))
    }
}

impl AttackGrid {
    pub fn settings(&self, optimizer: OptimizerKind, lr: f64) -> TrainSettings {
        TrainSettings {
            optimizer,
            lr,
            schedule: self.schedule,
            steps: self.steps,
            eval_every: self.eval_every,
            batch_size: self.batch_size,
            target_accuracy: Some(self.target_accuracy),
            divergence_loss: self.divergence_loss,
            trainable: self.trainable,
            hyper: self.hyper,
            groups: self.groups.clone(),
            second_order: self.second_order,
        }
    }
}

/// The first value of `list` that an earlier one equals.
fn first_repeat<T: PartialEq>(list: &[T]) -> Option<&T> {
    (list.iter().enumerate()).find_map(|(i, v)| list[..i].contains(v).then_some(v))
}

/// Deep-merges `overlay` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, overlay: &toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Parses a TOML file of `T` with named variants (`[variants.NAME]`, deep-merged over the
/// base where `variant` names one). `origin` names the file in errors, which name the field.
pub fn parse_with_variant<T: serde::de::DeserializeOwned>(
    text: &str,
    variant: Option<&str>,
    origin: &str,
) -> Result<T, String> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{origin}: {e}"))?;
    let variants = match table.remove("variants") {
        None => toml::Table::new(),
        Some(toml::Value::Table(v)) => v,
        Some(_) => return Err(format!("{origin}: `variants` must be a table of tables")),
    };
    for (name, overlay) in &variants {
        if name.is_empty() || crate::printable::unprintable_char(name).is_some() {
            return Err(format!(
                "{origin}: variant name {name:?}: give printable characters (no control, \
                 invisible or direction-changing characters)"
            ));
        }
        if !overlay.is_table() {
            return Err(format!(
                "{origin}: variants.{name} must be a table of fields to change \
                 ([variants.{name}]), got a {}",
                overlay.type_str()
            ));
        }
    }
    if let Some(name) = variant {
        let Some(toml::Value::Table(overlay)) = variants.get(name) else {
            let known: Vec<&String> = variants.keys().collect();
            return Err(format!(
                "{origin}: no variant {name:?} (variants: {known:?})"
            ));
        };
        merge(&mut table, overlay);
    }
    // Through serde_path_to_error, so a type error names its field: `seed = "0"` is
    // `seed: invalid type: string "0", expected u64`, not the bare message.
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
        |e: serde_path_to_error::Error<toml::de::Error>| {
            let which = variant.map_or(String::new(), |v| format!(" (variant {v})"));
            let path = e.path().to_string();
            let field = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            format!("{origin}{which}: {field}{}", e.inner().message())
        },
    )
}

impl Scenario {
    /// Parses a scenario, applying the named variant. `origin` names the file in errors.
    pub fn parse(text: &str, variant: Option<&str>, origin: &str) -> Result<Self, String> {
        let scenario: Scenario = parse_with_variant(text, variant, origin)?;
        scenario.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(scenario)
    }

    pub fn builtin(variant: Option<&str>) -> Result<Self, String> {
        Self::parse(DEFAULT_SCENARIO, variant, "built-in scenario")
    }

    pub fn variant_names(text: &str) -> Vec<String> {
        text.parse::<toml::Table>()
            .ok()
            .and_then(|t| {
                t.get("variants")?
                    .as_table()
                    .map(|v| v.keys().cloned().collect())
            })
            .unwrap_or_default()
    }

    /// Checks what the types cannot: class lists, widths, grids and budgets that make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty()
            || self.name.chars().count() > MAX_NAME_CHARS
            || crate::printable::unprintable_char(&self.name).is_some()
        {
            return Err(format!(
                "name {:?}: give 1 to {MAX_NAME_CHARS} printable characters (no control \
                 characters, terminal escapes, or invisible or direction-changing characters)",
                self.name
            ));
        }
        self.model.validate()?;
        if self.data.utility_classes.is_empty() || self.data.harmful_classes.is_empty() {
            return Err(
                "data.utility_classes and data.harmful_classes must name at least one class each"
                    .to_string(),
            );
        }
        let outputs = self.model.widths[self.model.widths.len() - 1];
        for &class in self
            .data
            .utility_classes
            .iter()
            .chain(&self.data.harmful_classes)
        {
            if class >= crate::data::DIGIT_CLASSES || class >= outputs {
                return Err(format!(
                    "data: class {class} is not a digit the model's {outputs} outputs can name"
                ));
            }
        }
        if self.model.widths[0] != crate::data::DIGIT_PIXELS {
            return Err(format!(
                "model.widths[0] must be {} (8x8 pixels), got {}",
                crate::data::DIGIT_PIXELS,
                self.model.widths[0]
            ));
        }
        if !(0.0..1.0).contains(&self.data.heldout_fraction) {
            return Err(format!(
                "data.heldout_fraction must be in [0, 1), got {}",
                self.data.heldout_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.trainability.target_accuracy) {
            return Err(format!(
                "trainability.target_accuracy must be in [0, 1], got {}",
                self.trainability.target_accuracy
            ));
        }
        if !(0.0 < self.data.test_fraction && self.data.test_fraction < 1.0) {
            return Err(format!(
                "data.test_fraction must be in (0, 1), got {}",
                self.data.test_fraction
            ));
        }
        let classes = &self.data;
        for (name, list) in [
            ("utility_classes", &classes.utility_classes),
            ("harmful_classes", &classes.harmful_classes),
        ] {
            if let Some((i, class)) =
                (list.iter().enumerate()).find(|(i, c)| list[..*i].contains(c))
            {
                return Err(format!(
                    "data.{name} names class {class} twice (at {} and {i})",
                    list.iter().position(|c| c == class).unwrap_or(0)
                ));
            }
        }
        if let Some(shared) =
            (classes.harmful_classes.iter()).find(|c| classes.utility_classes.contains(c))
        {
            return Err(format!(
                "data: class {shared} is in both utility_classes and harmful_classes; the attack \
                 must learn classes the released model was not trained on"
            ));
        }
        let parameters = self.model.parameter_bound();
        if parameters.is_none_or(|p| p > MAX_PARAMETERS) {
            return Err(format!(
                "model.widths {:?} describe {} parameters with compensation layers; at most {} \
                 ({} GB in f64) fit the several copies a run keeps",
                self.model.widths,
                parameters.map_or("more than 2^64".to_string(), |p| p.to_string()),
                MAX_PARAMETERS,
                MAX_PARAMETERS * 8 / 1_000_000_000
            ));
        }
        self.pretrain.validate("pretrain")?;
        if let Some(suppression) = self.release.suppression() {
            suppression.validate("release.relearning")?;
        }
        let grid = &self.attack.lr_grid;
        let finite = grid.from.is_finite() && grid.to.is_finite();
        if !(finite && grid.from > 0.0 && grid.to >= grid.from && grid.per_decade > 0) {
            return Err(format!(
                "attack.lr_grid needs finite 0 < from <= to and per_decade >= 1, got {grid:?}"
            ));
        }
        if grid.from < MIN_LR || grid.to > MAX_LR {
            return Err(format!(
                "attack.lr_grid spans {:e}..{:e}; learning rates must lie in {MIN_LR:e}..{MAX_LR:e}",
                grid.from, grid.to
            ));
        }
        let points = ((grid.to / grid.from).log10() * grid.per_decade as f64).round() + 1.0;
        if points > MAX_GRID_POINTS as f64 {
            return Err(format!(
                "attack.lr_grid gives {points} learning rates; at most {MAX_GRID_POINTS}"
            ));
        }
        if self.attack.optimizers.is_empty() {
            return Err("attack.optimizers is empty".to_string());
        }
        if let Some(rate) = first_repeat(&grid.values()) {
            return Err(format!(
                "attack.lr_grid: with per_decade = {} two rates round to {rate:e} (rates keep 3 \
                 significant digits); use fewer per decade",
                grid.per_decade
            ));
        }
        if !(self.attack.trainable.weights || self.attack.trainable.biases) {
            return Err(
                "attack.trainable: the undefended model has only weights and biases, and both \
                 are false: nothing of it would train"
                    .to_string(),
            );
        }
        // Every optimiser: some settings (groups) are refused with some optimisers only.
        // At both ends of every range of learning rates a run may draw (group scales apply).
        let random_lr = (self.sweep.random.as_ref()).and_then(|r| r.lr);
        // (A random range out of bounds is named by the sweep's own check.)
        let rates = [grid.from, grid.to]
            .into_iter()
            .chain((random_lr.into_iter().flatten()).filter(|lr| (MIN_LR..=MAX_LR).contains(lr)));
        for lr in rates {
            for &optimizer in &self.attack.optimizers {
                (self.attack).settings(optimizer, lr).validate("attack")?;
            }
        }
        for alpha in &self.defense.alphas {
            check_alpha("defense.alphas", *alpha)?;
        }
        if self.defense.k == 0 {
            return Err("defense.k must be at least 1".to_string());
        }
        // Layers are checked against the model now, not after pretraining.
        let layers = self.model.layer_count();
        (self.defense.layers)
            .resolve(layers, self.seed)
            .map_err(|e| format!("defense.layers: {e}"))?;
        self.validate_adaptive()?;
        self.validate_sweep()?;
        self.validate_splits()?;
        for (i, extra) in self.defense.extra.iter().enumerate() {
            extra
                .validate()
                .map_err(|e| format!("defense.extra[{i}]: {e}"))?;
            check_alpha(&format!("defense.extra[{i}].alpha"), extra.alpha)?;
            (extra.layers)
                .resolve(layers, self.seed)
                .map_err(|e| format!("defense.extra[{i}].layers: {e}"))?;
        }
        // After every list is known to be valid: repeats compare resolved defences.
        self.validate_no_repeats()?;
        self.defense.validate_baselines(&self.model)?;
        Ok(())
    }

    fn validate_sweep(&self) -> Result<(), String> {
        self.sweep.validate()?;
        let runs = self.sweep_run_count();
        if runs > super::MAX_SWEEP_RUNS {
            let shown = if runs == usize::MAX {
                "more than usize::MAX".to_string()
            } else {
                runs.to_string()
            };
            return Err(format!(
                "sweep: {shown} runs (sweep.seeds x targets x trials); at most {}",
                super::MAX_SWEEP_RUNS
            ));
        }
        // Every run may take its whole budget: the most steps of all runs together is bounded,
        // for `specdef run` (one seed of the attack grid) and for the sweep (all its seeds).
        let grid_runs = (self.targets().iter())
            .map(|t| (t.optimizers.len()).saturating_mul(self.attack.lr_grid.values().len()))
            .fold(0usize, usize::saturating_add);
        let mut budgets = vec![("attack.steps", self.attack.steps, grid_runs.max(runs))];
        if let Some(steps) = (self.sweep.random.as_ref()).and_then(|r| r.steps.as_ref()) {
            budgets[0].2 = grid_runs;
            let most = steps.iter().max().copied().unwrap_or(0);
            budgets.push(("sweep.random.steps", most, runs));
        }
        for (field, steps, runs) in budgets {
            let total = (runs as u64).saturating_mul(steps as u64);
            if total > MAX_TOTAL_STEPS {
                return Err(format!(
                    "{field} = {steps} over {runs} runs is {total} optimisation steps; at most \
                     {MAX_TOTAL_STEPS} (fewer steps, learning rates, optimisers, defences or seeds)"
                ));
            }
        }
        Ok(())
    }

    /// No list names the same thing twice: a repeated alpha, optimiser or attack would run
    /// twice and show as one row.
    fn validate_no_repeats(&self) -> Result<(), String> {
        fn once<T: PartialEq + std::fmt::Debug>(field: &str, list: &[T]) -> Result<(), String> {
            match first_repeat(list) {
                Some(value) => Err(format!(
                    "{field} names {value:?} twice: each would run twice and show as one row"
                )),
                None => Ok(()),
            }
        }
        once("defense.alphas", &self.defense.alphas)?;
        once(
            "adaptive.alphas",
            self.adaptive.alphas.as_deref().unwrap_or_default(),
        )?;
        once("attack.optimizers", &self.attack.optimizers)?;
        once("adaptive.attacks", &self.adaptive.attacks)?;
        once("adaptive.optimizers", &self.adaptive.optimizers)?;
        once("trainability.optimizers", &self.trainability.optimizers)?;
        // Defences are the same where they change the same model the same way: the same alpha,
        // compensation and, after resolving the layer list, the same k in the same layers.
        let spec = &self.model;
        let defenses: Vec<_> = (self.defense.defenses().iter())
            .filter_map(|d| d.spec_def().cloned())
            .map(|d| {
                let key = (
                    d.alpha,
                    d.compensate,
                    d.compensation,
                    d.k_per_layer(spec, self.seed),
                );
                (d, key)
            })
            .collect();
        if let Some(i) =
            (0..defenses.len()).find(|&i| defenses[..i].iter().any(|d| d.1 == defenses[i].1))
        {
            return Err(format!(
                "defense.extra repeats a defence of the alpha grid or of itself ({:?}, which \
                 scales {} at alpha {}): it would run twice",
                defenses[i].0, defenses[i].1.3, defenses[i].1.0
            ));
        }
        // `factorisation` chooses p from alpha: at some alpha it is `factorisation:p`.
        let alphas = (self.adaptive.alphas.as_ref()).unwrap_or(&self.defense.alphas);
        for &alpha in alphas {
            let names: Vec<String> = (self.adaptive.attacks.iter())
                .map(|a| a.describe(alpha))
                .collect();
            once(&format!("adaptive.attacks at alpha {alpha}"), &names)?;
        }
        Ok(())
    }

    /// Every set the data split makes has at least one image, checked before any work (the
    /// split is stratified, so the counts follow from the class sizes alone).
    fn validate_splits(&self) -> Result<(), String> {
        let labels = crate::data::load_digits()
            .map_err(|e| format!("the embedded digits: {e}"))?
            .dataset
            .labels;
        let size = |class: usize| labels.iter().filter(|&&l| l == class).count();
        let split = |n: usize, fraction: f64| {
            let part = (n as f64 * fraction).round() as usize;
            (n - part, part)
        };
        let data = &self.data;
        let (mut sets, mut heldout) = ([0usize; 4], [0usize; 2]);
        for &class in &data.utility_classes {
            let (train, test) = split(size(class), data.test_fraction);
            sets[0] += train;
            sets[1] += test;
        }
        for &class in &data.harmful_classes {
            let (train, test) = split(size(class), data.test_fraction);
            sets[2] += train;
            sets[3] += test;
            let (judged, held) = split(test, data.heldout_fraction);
            heldout[0] += judged;
            heldout[1] += held;
        }
        let names = [
            "utility training",
            "utility test",
            "harmful training",
            "harmful test",
        ];
        if let Some(i) = sets.iter().position(|&n| n == 0) {
            return Err(format!(
                "data.test_fraction = {} leaves the {} set empty (classes of ~180 images each); \
                 choose a fraction that keeps at least one image in each part",
                data.test_fraction, names[i]
            ));
        }
        if data.heldout_fraction > 0.0 && heldout.contains(&0) {
            return Err(format!(
                "data.heldout_fraction = {} leaves the {} empty ({} harmful test images to \
                 split); choose a fraction that keeps at least one image on each side",
                data.heldout_fraction,
                if heldout[0] == 0 {
                    "judged harmful test set"
                } else {
                    "held-out set"
                },
                sets[3]
            ));
        }
        Ok(())
    }

    fn validate_adaptive(&self) -> Result<(), String> {
        let adaptive = &self.adaptive;
        if adaptive.attacks.is_empty() {
            return Ok(());
        }
        if adaptive.optimizers.is_empty() {
            return Err("adaptive.optimizers is empty".to_string());
        }
        for alpha in adaptive.alphas.iter().flatten() {
            check_alpha("adaptive.alphas", *alpha)?;
        }
        if !self.defense.compensate
            && let Some(attack) = adaptive.attacks.iter().find(|a| a.needs_defended_layers())
        {
            return Err(format!(
                "adaptive.attacks: {attack} rewrites SpecDef's compensation layers, and \
                 defense.compensate = false defends without them"
            ));
        }
        for &attack in &adaptive.attacks {
            for &optimizer in &adaptive.optimizers {
                let mut settings = self.attack.settings(optimizer, self.attack.lr_grid.from);
                settings.trainable = attack.trainable(settings.trainable);
                settings
                    .validate("adaptive")
                    .map_err(|e| format!("{e} (adaptive attack {attack})"))?;
            }
        }
        Ok(())
    }
}
