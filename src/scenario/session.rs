//! A scenario run as a resumable state machine: each `advance` moves it on without blocking (a
//! UI frame drives it; in the browser a GPU readback completes only between frames), and
//! `run_scenario` drives the same machine with blocking readbacks, so both share one code path.
//!
//! Stages: pretrain (or load the cached model) -> download -> utility of the released model ->
//! for each target (a defence, the adaptive attacker's rewrite of it, or a benign task; see
//! `targets.rs`): defend (host, or the engine's Jacobi SVD), rewrite, and evaluate once (utility
//! and function preservation from the same logits) -> for each optimiser and learning rate:
//! fine-tune, then the model's utility and held-out harmful accuracy from one readback.

use super::cache::ModelCache;
use super::outcome::{UtilityMeasured, record};
use super::{
    AttackRun, DefenseSummary, Release, RunError, RunRecord, Scenario, ScenarioOutcome,
    SvdPlacement, Target, Task, TaskData, layer_sigmas,
};
use crate::defense::{Defense, StageData, relative_errors};
use crate::engine::cpu::{CpuEngine32, CpuEngine64};
use crate::engine::{Engine, EngineInfo, Owned, ReadTicket};
use crate::linalg::{JACOBI_SWEEPS, jacobi_svd};
use crate::model::{DeviceModel, HostModel, PendingPredict, predict, take_read};
use crate::training::{
    Curve, TrainOutcome, TrainRun, TrainSession, TrainSettings, accuracy, mean_cross_entropy,
};
use std::path::PathBuf;
use web_time::Instant;

enum Stage {
    Pretrain {
        device: Owned<DeviceModel>,
        session: TrainSession,
    },
    /// Relearning only: the harmful classes suppressed after pretraining (`release.rs`).
    Suppress {
        device: Owned<DeviceModel>,
        session: TrainSession,
    },
    Download {
        device: Owned<DeviceModel>,
        ticket: ReadTicket,
    },
    BaseUtility {
        eval: PendingPredict,
    },
    Defend,
    /// A baseline defence trained on the engine (RMU, NPO, RepNoise, TAR), from the released
    /// model.
    DefenseTrain {
        device: Owned<DeviceModel>,
        session: Box<dyn TrainRun>,
    },
    DefenseDownload {
        device: Owned<DeviceModel>,
        ticket: ReadTicket,
        /// The training's curves, kept with the model.
        curves: Vec<Curve>,
    },
    DefenseEval {
        model: HostModel,
        /// Parameters the adaptive rewrite added to the defended model.
        overhead: Option<i64>,
        eval: PendingPredict,
    },
    Attack {
        device: Owned<DeviceModel>,
        session: TrainSession,
        started: Instant,
    },
    AttackUtility {
        device: Owned<DeviceModel>,
        outcome: TrainOutcome,
        eval: PendingPredict,
        started: Instant,
    },
    Done,
}

/// A baseline defence trained once in this run (or found in the cache), with its curves.
struct TrainedBaseline {
    defense: Defense,
    model: HostModel,
    curves: Vec<Curve>,
}

pub struct ScenarioSession {
    scenario: Scenario,
    variant: Option<String>,
    info: EngineInfo,
    data: TaskData,
    /// The models fine-tuned, in order, and each one's runs; a target without runs is skipped
    /// (`summaries` has one entry per target begun).
    targets: Vec<Target>,
    runs: Vec<Vec<AttackRun>>,
    /// Whether records carry their trial index (a sweep's do).
    record_trials: bool,
    /// The target being defended or attacked, and how many of its runs are done.
    target_index: usize,
    runs_done: usize,
    cache: Option<ModelCache>,
    cache_dir: Option<PathBuf>,
    /// The baseline defences trained so far (a baseline attacked by several targets, the
    /// harmful task's and trainability's, trains once).
    trained_baselines: Vec<TrainedBaseline>,
    stage: Stage,
    base: Option<HostModel>,
    from_cache: bool,
    utility_before: f64,
    /// The released model's mean cross-entropy on the utility test set (the collapse baseline).
    utility_loss_before: f64,
    /// The released model's harmful test accuracy (the paper's 0.2 before the attack).
    harmful_before: f64,
    reference_logits: Vec<f64>,
    /// The model being attacked (defended, and rewritten by the adaptive attacker).
    defended: Option<HostModel>,
    summaries: Vec<DefenseSummary>,
    records: Vec<RunRecord>,
    notes: Vec<String>,
}

/// Moves a training run on: to its end when blocking, else by one non-blocking step.
fn drive(
    session: &mut dyn TrainRun,
    engine: &mut dyn Engine,
    block: bool,
) -> Result<bool, RunError> {
    if block {
        session.run_to_end(engine)?;
        Ok(true)
    } else {
        Ok(session.advance(engine)?)
    }
}

/// What a session fine-tunes: each target's runs (`Scenario::targets` order), and whether its
/// records carry their trial index.
pub struct SessionPlan {
    pub runs: Vec<Vec<AttackRun>>,
    pub record_trials: bool,
}

impl SessionPlan {
    /// Every target over the attack grid (what `specdef run` does).
    pub fn grid(scenario: &Scenario) -> Self {
        Self {
            runs: (scenario.targets().iter())
                .map(|t| scenario.grid_runs(t))
                .collect(),
            record_trials: false,
        }
    }
}

impl ScenarioSession {
    /// Loads the data and the cached released model if there is one, else starts pretraining;
    /// every target runs over the attack grid.
    pub fn start(
        engine: &mut dyn Engine,
        scenario: &Scenario,
        variant: Option<String>,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, RunError> {
        let plan = SessionPlan::grid(scenario);
        Self::start_planned(engine, scenario, variant, cache_dir, plan)
    }

    /// As `start`, running the plan's runs of each target (`plan.runs` follows
    /// `Scenario::targets`).
    pub fn start_planned(
        engine: &mut dyn Engine,
        scenario: &Scenario,
        variant: Option<String>,
        cache_dir: Option<PathBuf>,
        plan: SessionPlan,
    ) -> Result<Self, RunError> {
        let targets = scenario.targets();
        assert_eq!(plan.runs.len(), targets.len(), "one run list per target");
        let info = engine.info();
        let mut key = format!(
            "{}|{}|{}|{}|{}|{}",
            env!("CARGO_PKG_VERSION"),
            info.engine,
            serde_json::to_string(&scenario.data).unwrap_or_default(),
            serde_json::to_string(&scenario.model).unwrap_or_default(),
            serde_json::to_string(&scenario.pretrain).unwrap_or_default(),
            scenario.seed
        );
        // Only where there is a suppression step, so new-classes keys stay as they were.
        if !scenario.release.is_new_classes() {
            key.push_str(&format!(
                "|release={}",
                serde_json::to_string(&scenario.release).unwrap_or_default()
            ));
        }
        let cache = (cache_dir.as_ref()).map(|dir| ModelCache::pretrained(dir, key));
        let mut session = Self {
            data: TaskData::load(scenario)?,
            targets,
            runs: plan.runs,
            record_trials: plan.record_trials,
            target_index: 0,
            runs_done: 0,
            scenario: scenario.clone(),
            variant,
            info,
            cache,
            cache_dir,
            trained_baselines: Vec::new(),
            stage: Stage::Done,
            base: None,
            from_cache: false,
            utility_before: f64::NAN,
            utility_loss_before: f64::NAN,
            harmful_before: f64::NAN,
            reference_logits: Vec::new(),
            defended: None,
            summaries: Vec::new(),
            records: Vec::new(),
            notes: Vec::new(),
        };
        session.stage = match session.cached_model() {
            Some(model) => session.released(engine, model)?,
            None => {
                session.notes.push(match scenario.release {
                    Release::NewClasses => {
                        "pretraining the released model on the utility task".to_string()
                    }
                    Release::Relearning(_) => "pretraining the released model on the utility \
                                               and harmful tasks (then suppressing the harmful one)"
                        .to_string(),
                });
                let host = HostModel::init(&scenario.model, scenario.seed);
                let device = DeviceModel::upload(engine, &host)?;
                let train = &session.data;
                let session_train = TrainSession::start(
                    engine,
                    &device,
                    &train.release_train,
                    &train.release_test,
                    &scenario.pretrain,
                    scenario.seed,
                )?;
                Stage::Pretrain {
                    device,
                    session: session_train,
                }
            }
        };
        Ok(session)
    }

    fn cached_model(&mut self) -> Option<HostModel> {
        let (model, note) = self.cache.as_ref()?.load(&self.scenario.model);
        self.notes.extend(note);
        self.from_cache = model.is_some();
        model
    }

    /// The released model is known: measure its utility next.
    fn released(&mut self, engine: &mut dyn Engine, model: HostModel) -> Result<Stage, RunError> {
        let utility = &self.data.utility_test.inputs;
        self.reference_logits = predict(&mut CpuEngine64::new(), &model, utility)?;
        // The utility test set, then the harmful one: what the released model knows of each.
        let mut inputs = utility.clone();
        inputs.extend_from_slice(&self.data.harmful_test.inputs);
        let eval = PendingPredict::start(engine, &model, &inputs)?;
        self.base = Some(model);
        Ok(Stage::BaseUtility { eval })
    }

    /// The target being defended or attacked.
    fn current_target(&self) -> &Target {
        &self.targets[self.target_index]
    }

    /// Attack runs in all, and done.
    pub fn progress(&self) -> (usize, usize) {
        (self.records.len(), self.runs.iter().map(Vec::len).sum())
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// What the session is doing now, for a progress line.
    pub fn describe(&self) -> String {
        match &self.stage {
            Stage::Pretrain { session, .. } => {
                format!("pretraining, step {}", session.outcome().steps_run)
            }
            Stage::Suppress { session, .. } => {
                format!(
                    "suppressing the harmful task, step {}",
                    session.outcome().steps_run
                )
            }
            Stage::Download { .. } | Stage::BaseUtility { .. } => {
                "measuring the released model".to_string()
            }
            Stage::DefenseTrain { session, .. } => format!(
                "training the defence {}, step {}",
                self.current_target().label(),
                session.outcome().steps_run
            ),
            Stage::Defend | Stage::DefenseDownload { .. } | Stage::DefenseEval { .. } => {
                format!("defending: {}", self.current_target().label())
            }
            Stage::Attack { .. } | Stage::AttackUtility { .. } => {
                let run = self.current_attack();
                format!(
                    "{} {} lr={:e}",
                    self.summaries.last().map_or("", |s| s.label.as_str()),
                    run.optimizer.name(),
                    run.lr
                )
            }
            Stage::Done => "done".to_string(),
        }
    }

    /// The loss curve of the training run in progress (pretraining or an attack), for live plots.
    pub fn live_loss_curve(&self) -> Option<&[(usize, f64)]> {
        match &self.stage {
            Stage::Pretrain { session, .. }
            | Stage::Suppress { session, .. }
            | Stage::Attack { session, .. } => Some(&session.outcome().loss_curve),
            Stage::DefenseTrain { session, .. } => Some(&session.outcome().loss_curve),
            _ => None,
        }
    }

    pub fn records(&self) -> &[RunRecord] {
        &self.records
    }

    pub fn summaries(&self) -> &[DefenseSummary] {
        &self.summaries
    }

    /// One-line notes (cache hits, phases) since the last call.
    pub fn drain_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// The attack run in progress.
    fn current_attack(&self) -> AttackRun {
        self.runs[self.target_index][self.runs_done]
    }

    /// The attack run's settings: the attack grid's (with a random search's budget), training
    /// the groups the adaptive attacker's rewrite trains.
    fn current_settings(&self) -> TrainSettings {
        let mut settings = self.current_attack().settings(&self.scenario);
        if let Some(attack) = self.current_target().adaptive {
            settings.trainable = attack.trainable(settings.trainable);
        }
        if self.current_target().task == Task::Benign {
            settings.target_accuracy = Some(self.scenario.trainability.target_accuracy);
        }
        settings
    }

    /// The fine-tuning's (train, test) sets: the harmful task's, or trainability's benign one.
    fn task_data(&self) -> (&crate::data::Dataset, &crate::data::Dataset) {
        match self.current_target().task {
            Task::Harmful => (&self.data.harmful_train, &self.data.harmful_test),
            Task::Benign => (&self.data.benign_train, &self.data.benign_test),
        }
    }

    /// What is measured once after a fine-tuning run: the utility test set, then (after an
    /// attack) the held-out harmful images, as one batch of inputs.
    fn after_attack_inputs(&self) -> Vec<f64> {
        let mut inputs = self.data.utility_test.inputs.clone();
        if self.current_target().task == Task::Harmful {
            inputs.extend_from_slice(&self.data.harmful_heldout.inputs);
        }
        inputs
    }

    fn start_attack(&mut self, engine: &mut dyn Engine) -> Result<Stage, RunError> {
        let model = self
            .defended
            .as_ref()
            .expect("a defended model before its attacks");
        let settings = self.current_settings();
        let started = Instant::now();
        let device = DeviceModel::upload(engine, model)?;
        let (train, test) = self.task_data();
        let session =
            TrainSession::start(engine, &device, train, test, &settings, self.scenario.seed)?;
        Ok(Stage::Attack {
            device,
            session,
            started,
        })
    }

    /// The current target's baseline defence as trained already: in this session, or in the
    /// cache by an earlier run of the same released model, engine and defence.
    fn trained_baseline(&mut self) -> Option<HostModel> {
        let part = self.current_target().defense.trained_part()?.clone();
        if let Some(done) = self.trained_baselines.iter().find(|b| b.defense == part) {
            return Some(done.model.clone());
        }
        let (found, note) = (self.baseline_cache(&part)?).load_with_curves(&self.scenario.model);
        self.notes.extend(note);
        let (model, curves) = found?;
        self.trained_baselines.push(TrainedBaseline {
            defense: part,
            model: model.clone(),
            curves,
        });
        Some(model)
    }

    /// The defended model from the baseline's trained one (SpecDef on top for a stack), then
    /// its evaluation.
    fn defend_trained(
        &mut self,
        engine: &mut dyn Engine,
        trained: HostModel,
    ) -> Result<Stage, RunError> {
        let defense = self.current_target().defense.clone();
        let seed = self.scenario.seed;
        let model = match self.scenario.defense.svd {
            SvdPlacement::Host => defense.after_training(trained, seed, None)?,
            SvdPlacement::Engine => defense.after_training(
                trained,
                seed,
                Some(&mut |w| {
                    jacobi_svd(&mut *engine, w, JACOBI_SWEEPS).map_err(|e| e.to_string())
                }),
            )?,
        };
        self.rewrite_and_evaluate(engine, model)
    }

    /// A baseline's cache entry: the released model's key and the defence's parameters.
    fn baseline_cache(&self, defense: &Defense) -> Option<ModelCache> {
        let (dir, released) = (self.cache_dir.as_ref()?, self.cache.as_ref()?);
        let revision = defense.training_stage().map_or(0, |stage| stage.revision());
        let key = format!(
            "{}|baseline={}|revision={revision}",
            released.key(),
            defense.params()
        );
        Some(ModelCache::baseline(dir, key))
    }

    /// The defended model is known: the adaptive attacker's rewrite where there is one, then
    /// its utility and function preservation, measured from one evaluation.
    fn rewrite_and_evaluate(
        &mut self,
        engine: &mut dyn Engine,
        model: HostModel,
    ) -> Result<Stage, RunError> {
        let target = self.current_target();
        let (model, overhead) = match target.adaptive {
            None => (model, None),
            Some(attack) => {
                let rewritten = (attack.apply(&model, target.alpha(), self.scenario.seed))
                    .map_err(|message| RunError::Adaptive {
                        target: target.label(),
                        message,
                    })?;
                let added = rewritten.parameter_count() as i64 - model.parameter_count() as i64;
                (rewritten, Some(added))
            }
        };
        let eval = PendingPredict::start(engine, &model, &self.data.utility_test.inputs)?;
        Ok(Stage::DefenseEval {
            model,
            overhead,
            eval,
        })
    }

    /// The next target with runs to defend, or the end.
    fn next_defense(&mut self) -> Stage {
        let begun = if self.summaries.is_empty() {
            0
        } else {
            self.target_index + 1
        };
        match (begun..self.targets.len()).find(|&t| !self.runs[t].is_empty()) {
            Some(next) => {
                self.target_index = next;
                self.runs_done = 0;
                Stage::Defend
            }
            None => Stage::Done,
        }
    }

    /// Moves the session on. Without `block`, returns at once when a readback is still in flight
    /// (false: nothing happened); with `block`, waits for it (native only for the GPU).
    pub fn advance(&mut self, engine: &mut dyn Engine, block: bool) -> Result<bool, RunError> {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        let (next, moved) = self.step(engine, stage, block)?;
        self.stage = next;
        Ok(moved)
    }

    fn step(
        &mut self,
        engine: &mut dyn Engine,
        stage: Stage,
        block: bool,
    ) -> Result<(Stage, bool), RunError> {
        Ok(match stage {
            Stage::Pretrain {
                device,
                mut session,
            } => {
                let moved = drive(&mut session, engine, block)?;
                if !session.is_finished() {
                    return Ok((Stage::Pretrain { device, session }, moved));
                }
                let outcome = session.finish();
                self.notes.push(format!(
                    "pretrained for {} steps: accuracy {:.3} on the {}",
                    outcome.steps_run,
                    outcome.final_accuracy,
                    match self.scenario.release {
                        Release::NewClasses => "utility test set",
                        Release::Relearning(_) => "utility and harmful test sets",
                    }
                ));
                match (
                    self.scenario.release.suppression(),
                    &self.data.suppression_train,
                ) {
                    (Some(settings), Some(train)) => {
                        let session = TrainSession::start(
                            engine,
                            &device,
                            train,
                            &self.data.utility_test,
                            settings,
                            self.scenario.seed,
                        )?;
                        (Stage::Suppress { device, session }, true)
                    }
                    _ => {
                        let ticket = device.begin_download(engine)?;
                        (Stage::Download { device, ticket }, true)
                    }
                }
            }
            Stage::Suppress {
                device,
                mut session,
            } => {
                let moved = drive(&mut session, engine, block)?;
                if !session.is_finished() {
                    return Ok((Stage::Suppress { device, session }, moved));
                }
                let outcome = session.finish();
                self.notes.push(format!(
                    "suppressed the harmful task for {} steps: utility accuracy {:.3}",
                    outcome.steps_run, outcome.final_accuracy
                ));
                let ticket = device.begin_download(engine)?;
                (Stage::Download { device, ticket }, true)
            }
            Stage::Download { device, mut ticket } => {
                match take_read(engine, &mut ticket, block)? {
                    None => (Stage::Download { device, ticket }, false),
                    Some(values) => {
                        let model = device.host_from(values);
                        if let Some(cache) = &self.cache
                            && let Err(e) = cache.store(&model)
                        {
                            self.notes
                                .push(format!("could not cache the pretrained model: {e}"));
                        }
                        (self.released(engine, model)?, true)
                    }
                }
            }
            Stage::BaseUtility { mut eval } => match eval.poll(engine, block)? {
                None => (Stage::BaseUtility { eval }, false),
                Some(logits) => {
                    let labels = &self.data.utility_test.labels;
                    let rows = labels.len() + self.data.harmful_test.len();
                    let classes = logits.len() / rows.max(1);
                    let (utility, harmful) = logits.split_at(labels.len() * classes);
                    self.utility_before = accuracy(utility, labels);
                    self.utility_loss_before = mean_cross_entropy(utility, labels);
                    self.harmful_before = accuracy(harmful, &self.data.harmful_test.labels);
                    self.notes.push(format!(
                        "released model: utility accuracy {:.3}, harmful accuracy {:.3} ({})",
                        self.utility_before,
                        self.harmful_before,
                        self.scenario.release.name()
                    ));
                    (self.next_defense(), true)
                }
            },
            Stage::Defend => {
                if let Some(trained) = self.trained_baseline() {
                    return Ok((self.defend_trained(engine, trained)?, true));
                }
                let base = self
                    .base
                    .as_ref()
                    .expect("the released model before defences");
                let target = &self.targets[self.target_index];
                let seed = self.scenario.seed;
                if let Some(stage) = target.defense.training_stage() {
                    let data = StageData {
                        utility: &self.data.utility_train,
                        harmful: &self.data.harmful_train,
                        eval: &self.data.utility_test,
                    };
                    let device = DeviceModel::upload(engine, base)?;
                    let session = stage.start(engine, &device, base, data, seed)?;
                    return Ok((Stage::DefenseTrain { device, session }, true));
                }
                let model = match self.scenario.defense.svd {
                    SvdPlacement::Host => target.defense.apply(base, seed)?,
                    SvdPlacement::Engine => target.defense.apply_with(base, seed, &mut |w| {
                        jacobi_svd(&mut *engine, w, JACOBI_SWEEPS).map_err(|e| e.to_string())
                    })?,
                };
                (self.rewrite_and_evaluate(engine, model)?, true)
            }
            Stage::DefenseTrain {
                device,
                mut session,
            } => {
                let moved = drive(&mut *session, engine, block)?;
                if !session.is_finished() {
                    return Ok((Stage::DefenseTrain { device, session }, moved));
                }
                let outcome = session.outcome();
                let trained = self.current_target().defense.trained_part();
                self.notes.push(format!(
                    "{}: trained for {} steps, loss {:.4}, utility accuracy {:.3}{}",
                    trained.map_or(String::new(), Defense::label),
                    outcome.steps_run,
                    outcome.final_loss,
                    outcome.final_accuracy,
                    session
                        .summary()
                        .map_or(String::new(), |s| format!("; {s}"))
                ));
                let ticket = device.begin_download(engine)?;
                let curves = session.curves();
                (
                    Stage::DefenseDownload {
                        device,
                        ticket,
                        curves,
                    },
                    true,
                )
            }
            Stage::DefenseDownload {
                device,
                mut ticket,
                curves,
            } => match take_read(engine, &mut ticket, block)? {
                None => (
                    Stage::DefenseDownload {
                        device,
                        ticket,
                        curves,
                    },
                    false,
                ),
                Some(values) => {
                    let model = device.host_from(values);
                    let part = (self.current_target().defense.trained_part())
                        .expect("a trained defence")
                        .clone();
                    if let Some(cache) = self.baseline_cache(&part)
                        && let Err(e) = cache.store_with_curves(&model, &curves)
                    {
                        let label = part.label();
                        self.notes.push(format!("could not cache {label}: {e}"));
                    }
                    self.trained_baselines.push(TrainedBaseline {
                        defense: part,
                        model: model.clone(),
                        curves,
                    });
                    (self.defend_trained(engine, model)?, true)
                }
            },
            Stage::DefenseEval {
                model,
                overhead,
                mut eval,
            } => match eval.poll(engine, block)? {
                None => (
                    Stage::DefenseEval {
                        model,
                        overhead,
                        eval,
                    },
                    false,
                ),
                Some(logits) => {
                    let summary = self.summarize(&model, overhead, &logits)?;
                    self.notes.push(format!(
                        "{}: utility {:.3}, {} parameters",
                        summary.label, summary.utility_after_defense, summary.parameter_count
                    ));
                    self.summaries.push(summary);
                    self.defended = Some(model);
                    (self.start_attack(engine)?, true)
                }
            },
            Stage::Attack {
                device,
                mut session,
                started,
            } => {
                let moved = drive(&mut session, engine, block)?;
                if session.is_finished() {
                    let outcome = session.finish();
                    let eval =
                        PendingPredict::start_device(engine, &device, &self.after_attack_inputs())?;
                    (
                        Stage::AttackUtility {
                            device,
                            outcome,
                            eval,
                            started,
                        },
                        true,
                    )
                } else {
                    (
                        Stage::Attack {
                            device,
                            session,
                            started,
                        },
                        moved,
                    )
                }
            }
            Stage::AttackUtility {
                device,
                outcome,
                mut eval,
                started,
            } => match eval.poll(engine, block)? {
                None => (
                    Stage::AttackUtility {
                        device,
                        outcome,
                        eval,
                        started,
                    },
                    false,
                ),
                Some(logits) => {
                    // The utility test set's logits first, then the held-out harmful images'.
                    let utility = &self.data.utility_test;
                    let heldout_rows = match self.current_target().task {
                        Task::Harmful => self.data.harmful_heldout.len(),
                        Task::Benign => 0,
                    };
                    let classes = logits.len() / (utility.len() + heldout_rows).max(1);
                    let (utility_logits, heldout_logits) = logits.split_at(utility.len() * classes);
                    let measured = UtilityMeasured {
                        accuracy_before_defense: self.utility_before,
                        loss_before_defense: self.utility_loss_before,
                        accuracy_after_attack: accuracy(utility_logits, &utility.labels),
                        loss_after_attack: mean_cross_entropy(utility_logits, &utility.labels),
                    };
                    let heldout = &self.data.harmful_heldout;
                    let heldout_accuracy = (!heldout_logits.is_empty())
                        .then(|| accuracy(heldout_logits, &heldout.labels));
                    let run = self.current_attack();
                    let settings = self.current_settings();
                    let summary = self.summaries.last().expect("a defence before its attacks");
                    let mut finished = record(
                        &self.scenario,
                        self.variant.clone(),
                        &self.info,
                        summary,
                        (run.optimizer.name(), run.lr),
                        self.current_target().task,
                        &settings,
                        outcome,
                        measured,
                        started.elapsed().as_secs_f64() * 1e3,
                    );
                    finished.pretrain_from_cache = Some(self.from_cache);
                    finished.harmful_accuracy_released = Some(self.harmful_before);
                    finished.release = Some(self.scenario.release.name().to_string());
                    finished.heldout_harmful_accuracy = heldout_accuracy;
                    finished.trial = self.record_trials.then_some(run.trial);
                    self.records.push(finished);
                    self.runs_done += 1;
                    let next = if self.runs_done == self.runs[self.target_index].len() {
                        self.next_defense()
                    } else {
                        self.start_attack(engine)?
                    };
                    (next, true)
                }
            },
            Stage::Done => (Stage::Done, false),
        })
    }

    /// Utility and function preservation from the run engine's logits, and the precision of each
    /// CPU engine the run engine is not.
    fn summarize(
        &self,
        model: &HostModel,
        adaptive_overhead: Option<i64>,
        logits: &[f64],
    ) -> Result<DefenseSummary, RunError> {
        let data = &self.data.utility_test;
        let width = model.spec.widths[model.spec.widths.len() - 1];
        let (max, mean) = relative_errors(logits, &self.reference_logits, width);
        let mut function_error = vec![(self.info.engine.clone(), max, mean)];
        let references: [&mut dyn Engine; 2] = [&mut CpuEngine64::new(), &mut CpuEngine32::new()];
        for e in references {
            let name = e.info().engine;
            if name != self.info.engine {
                let outputs = predict(e, model, &data.inputs)?;
                let (max, mean) = relative_errors(&outputs, &self.reference_logits, width);
                function_error.push((name, max, mean));
            }
        }
        let target = self.current_target();
        let training = (target.defense.trained_part())
            .and_then(|part| self.trained_baselines.iter().find(|b| b.defense == *part))
            .map_or(Vec::new(), |b| b.curves.clone());
        Ok(DefenseSummary {
            label: target.label(),
            training,
            defense: target.defense.clone(),
            adaptive: target.adaptive.map(|a| a.describe(target.alpha())),
            adaptive_overhead,
            parameter_count: model.parameter_count(),
            utility_after_defense: accuracy(logits, &data.labels),
            function_error,
            sigma_1: layer_sigmas(model).map_err(RunError::Svd)?,
        })
    }

    pub fn into_outcome(self) -> ScenarioOutcome {
        ScenarioOutcome {
            scenario: self.scenario,
            variant: self.variant,
            engine: self.info,
            utility_before_defense: self.utility_before,
            pretrain_from_cache: self.from_cache,
            defenses: self.summaries,
            records: self.records,
        }
    }
}
