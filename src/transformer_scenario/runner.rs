//! Runs the transformer scenario: release, suppression, the defended models, then every attack
//! of the grid, each written as a `RunRecord` the moment it ends.

use super::classifier::{DeviceClassifier, HostClassifier, Measured, TrainJob, train};
use super::released::{ReleasedClassifier, ReleasedMeasures};
use super::topics::{Batcher, Example, TopicData, draw, topic_names};
use super::{ControlPart, TransformerError, TransformerScenario};
use crate::defense::{CompensationForm, Defense, SpecDef};
use crate::encoder::{self, EncoderHost, EncoderTrainable};
use crate::engine::Engine;
use crate::engine::cpu::CpuEngine64;
use crate::model::{FactorRole, ParamGroup, Trainable};
use crate::record::RunRecord;
use crate::scenario::{
    DefenseSummary, RecordParts, RunSettings, Task, UtilityMeasured, layer_sigmas_of, record_of,
};
use crate::tokenizer::WordPiece;
use crate::training::{OptimizerKind, TrainOutcome, TrainSettings, accuracy};
use crate::transformer_files::{FETCH_HINT, model_dir, wordnet_dir};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Mixed into the scenario's seed for each phase, so no two draw the same batches.
const RELEASE_SEED: u64 = 0x0072_656c_6561_7365;
const SUPPRESSION_SEED: u64 = 0x7375_7070_7265_7373;
pub(super) const ATTACK_SEED: u64 = 0x6174_7461_636b;

/// The scenario's records and the summaries of the models they attacked.
pub struct TransformerOutcome {
    pub records: Vec<RunRecord>,
    pub defenses: Vec<DefenseSummary>,
}

/// One model the attacker fine-tunes, and how.
struct Target {
    summary: DefenseSummary,
    host: HostClassifier,
    trainable: EncoderTrainable,
    optimizers: Vec<OptimizerKind>,
    lrs: Vec<f64>,
}

/// What the scenario reads: the encoder's kept blocks, its tokenizer and the topic task.
pub struct TransformerInputs {
    pub encoder: EncoderHost,
    pub tokenizer: WordPiece,
    pub data: TopicData,
}

impl TransformerInputs {
    /// Reads them from the cache folder `scripts/fetch-transformer.sh` fills.
    pub fn load(scenario: &TransformerScenario) -> Result<Self, TransformerError> {
        let folder = model_dir();
        let data_noun = wordnet_dir().join("data.noun");
        for needed in [folder.join("model.safetensors"), data_noun.clone()] {
            if !needed.is_file() {
                return Err(TransformerError::File {
                    path: needed.display().to_string(),
                    message: format!("missing: {FETCH_HINT}"),
                });
            }
        }
        let (config, weights) = encoder::load(&folder, Some(scenario.encoder.blocks))?;
        let tokenizer = WordPiece::from_file(&folder.join("tokenizer.json"))?;
        let text = std::fs::read_to_string(&data_noun).map_err(|e| TransformerError::File {
            path: data_noun.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            encoder: EncoderHost::from_weights(&config, &weights),
            tokenizer,
            data: TopicData::from_data_noun(&text, scenario.encoder.test_size)?,
        })
    }
}

fn log_inputs(scenario: &TransformerScenario, data: &TopicData, settings: &mut RunSettings<'_>) {
    (settings.log)(&format!(
        "{} blocks of all-MiniLM-L6-v2, {} tokens per gloss; train {} utility and {} harmful \
         glosses, test {} and {} (and {} harmful held out from every attack's judging)",
        scenario.encoder.blocks,
        scenario.encoder.tokens,
        data.utility_train.len(),
        data.harmful_train.len(),
        data.utility_test.len(),
        data.harmful_test.len(),
        data.harmful_heldout.len()
    ));
}

/// The scenario's release and suppression alone (what `specdef release-transformer` saves).
pub fn release_classifier(
    engine: &mut dyn Engine,
    scenario: &TransformerScenario,
    settings: &mut RunSettings<'_>,
) -> Result<ReleasedClassifier, TransformerError> {
    let inputs = TransformerInputs::load(scenario)?;
    let batcher = Batcher {
        tokenizer: &inputs.tokenizer,
        tokens: scenario.encoder.tokens,
    };
    log_inputs(scenario, &inputs.data, settings);
    release(
        engine,
        scenario,
        &batcher,
        &inputs.data,
        inputs.encoder,
        settings,
    )
}

/// Runs `scenario` on `engine`, from `released` where given (made by the same release
/// settings), else releasing the model first; `finished` gets each record as its run ends (a
/// caller may store it then). Progress and notes go through `settings`.
pub fn run_transformer_scenario(
    engine: &mut dyn Engine,
    scenario: &TransformerScenario,
    released: Option<ReleasedClassifier>,
    settings: &mut RunSettings<'_>,
    finished: &mut dyn FnMut(&RunRecord) -> Result<(), TransformerError>,
) -> Result<TransformerOutcome, TransformerError> {
    let inputs = TransformerInputs::load(scenario)?;
    let (tokenizer, data) = (&inputs.tokenizer, &inputs.data);
    let batcher = Batcher {
        tokenizer,
        tokens: scenario.encoder.tokens,
    };
    log_inputs(scenario, data, settings);
    let released = match released {
        Some(released) => {
            released.check_made_by(scenario)?;
            (settings.log)(&format!(
                "the released model from the file (harmful accuracy {:.3}, utility {:.3})",
                released.measured.harmful_accuracy, released.measured.utility_accuracy
            ));
            released
        }
        None => release(
            engine,
            scenario,
            &batcher,
            data,
            inputs.encoder.clone(),
            settings,
        )?,
    };
    let targets = targets(engine, scenario, &batcher, data, &released, settings)?;
    let total: usize = (targets.iter())
        .map(|t| t.optimizers.len() * t.lrs.len())
        .sum();
    let mut records = Vec::with_capacity(total);
    for target in &targets {
        for &optimizer in &target.optimizers {
            for &lr in &target.lrs {
                let what = format!("{} {} lr={lr:.0e}", target.summary.label, optimizer.name());
                (settings.progress)(records.len(), total, &what);
                let record = attack(
                    engine,
                    scenario,
                    settings.variant.clone(),
                    &batcher,
                    data,
                    &released,
                    target,
                    (optimizer, lr),
                )?;
                finished(&record)?;
                records.push(record);
            }
        }
    }
    (settings.progress)(records.len(), total, "done");
    Ok(TransformerOutcome {
        records,
        defenses: targets.into_iter().map(|t| t.summary).collect(),
    })
}

/// Fine-tunes on every topic, then suppresses the harmful ones.
fn release(
    engine: &mut dyn Engine,
    scenario: &TransformerScenario,
    batcher: &Batcher<'_>,
    data: &TopicData,
    encoder: EncoderHost,
    settings: &mut RunSettings<'_>,
) -> Result<ReleasedClassifier, TransformerError> {
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
    let fresh = HostClassifier::new(encoder, topic_names().len(), &mut rng);
    let model = DeviceClassifier::upload(engine, &fresh)?;
    let all: Vec<Example> = (data.utility_train.iter())
        .chain(&data.harmful_train)
        .cloned()
        .collect();
    let both_tests: Vec<Example> = (data.utility_test.iter())
        .chain(&data.harmful_test)
        .cloned()
        .collect();
    let batch = scenario.release.batch_size.unwrap_or(16);
    let mut log_phase = |phase: &str, outcome: &TrainOutcome| {
        (settings.log)(&format!(
            "{phase}: {} steps, training loss {:.3} at the end",
            outcome.steps_run, outcome.final_loss
        ));
    };
    let outcome = train(
        engine,
        &model,
        batcher,
        TrainJob {
            settings: &scenario.release,
            trainable: EncoderTrainable::default(),
            draw: &mut |rng| draw(rng, &all, batch, false),
            judged_on: &both_tests,
            seed: scenario.seed ^ RELEASE_SEED,
        },
        &mut |_, _, _| {},
    )?;
    log_phase("release (all ten topics)", &outcome);
    let before = model.measure(engine, batcher, &data.harmful_test)?;
    // Half of each batch utility glosses with their labels, half harmful ones with the
    // uniform target.
    let batch = scenario.suppression.batch_size.unwrap_or(16);
    let (utility_half, harmful_half) = (batch - batch / 2, batch / 2);
    let outcome = train(
        engine,
        &model,
        batcher,
        TrainJob {
            settings: &scenario.suppression,
            trainable: EncoderTrainable::default(),
            draw: &mut |rng| {
                let mut drawn = draw(rng, &data.utility_train, utility_half, false);
                drawn.extend(draw(rng, &data.harmful_train, harmful_half, true));
                drawn
            },
            judged_on: &data.harmful_test,
            seed: scenario.seed ^ SUPPRESSION_SEED,
        },
        &mut |_, _, _| {},
    )?;
    log_phase("suppression of the harmful topics", &outcome);
    let harmful = model.measure(engine, batcher, &data.harmful_test)?;
    let utility = model.measure(engine, batcher, &data.utility_test)?;
    (settings.log)(&format!(
        "released model: harmful accuracy {:.3} (before suppression {:.3}), utility accuracy \
         {:.3}, utility loss {:.3}",
        harmful.accuracy, before.accuracy, utility.accuracy, utility.loss
    ));
    Ok(ReleasedClassifier {
        classifier: model.download(engine)?,
        scenario: scenario.clone(),
        measured: ReleasedMeasures {
            harmful_accuracy: harmful.accuracy,
            harmful_accuracy_before_suppression: before.accuracy,
            utility_accuracy: utility.accuracy,
            utility_loss: utility.loss,
        },
    })
}

/// The parts a full fine-tuning trains: the scenario's groups of the linear maps, the layer
/// norms and the head (the embedding tables stay, as in `transformer-finetune`).
pub(super) fn full_fine_tuning(scenario: &TransformerScenario) -> EncoderTrainable {
    EncoderTrainable {
        layers: scenario.attack.trainable,
        norms: true,
        embeddings: false,
        head: Some(scenario.attack.trainable),
    }
}

/// `released` with SpecDef at `alpha` as the scenario applies it (its k and layers, full
/// compensation, seeded by the scenario's seed).
pub(super) fn defend(
    released: &HostClassifier,
    scenario: &TransformerScenario,
    alpha: f64,
) -> Result<(SpecDef, HostClassifier), TransformerError> {
    let spec = SpecDef {
        alpha,
        k: scenario.defense.k,
        layers: scenario.defense.layers.clone(),
        compensate: true,
        compensation: CompensationForm::Full,
    };
    let mut host = released.clone();
    spec.apply_to_layers(&mut host.encoder.linear, scenario.seed)?;
    Ok((spec, host))
}

/// The undefended and defended models, their rewrites and the controls, each summarised.
fn targets(
    engine: &mut dyn Engine,
    scenario: &TransformerScenario,
    batcher: &Batcher<'_>,
    data: &TopicData,
    released: &ReleasedClassifier,
    settings: &mut RunSettings<'_>,
) -> Result<Vec<Target>, TransformerError> {
    let mut models: Vec<(Defense, HostClassifier)> =
        vec![(Defense::None, released.classifier.clone())];
    for &alpha in &scenario.defense.alphas {
        let (spec, host) = defend(&released.classifier, scenario, alpha)?;
        models.push((Defense::SpecDef(spec), host));
    }
    let full = full_fine_tuning(scenario);
    // Every model's function (on the run engine) is compared with the released model's in f64,
    // on both held-out samples: the digits scenario's measure of function preservation.
    let held_out: Vec<Example> = (data.utility_test.iter())
        .chain(&data.harmful_test)
        .cloned()
        .collect();
    let mut exact = CpuEngine64::new();
    let reference = DeviceClassifier::upload(&mut exact, &released.classifier)?;
    let reference = reference.logits(&mut exact, batcher, &held_out)?;
    let compared = (held_out.as_slice(), reference.as_slice());
    let mut targets = Vec::new();
    let mut summarise = |defense: &Defense,
                         host: HostClassifier,
                         adaptive: Option<(String, i64)>,
                         trainable: EncoderTrainable,
                         (optimizers, lrs): (&[OptimizerKind], Vec<f64>),
                         engine: &mut dyn Engine|
     -> Result<(), TransformerError> {
        if optimizers.is_empty() {
            return Ok(());
        }
        let summary = summary(engine, batcher, data, compared, defense, &host, adaptive)?;
        (settings.log)(&format!(
            "{}: {} parameters, utility {:.3}, function error max {:.2e}",
            summary.label,
            summary.parameter_count,
            summary.utility_after_defense,
            summary.function_error[0].1
        ));
        targets.push(Target {
            summary,
            host,
            trainable,
            optimizers: optimizers.to_vec(),
            lrs,
        });
        Ok(())
    };
    for (defense, host) in &models {
        let grid = (
            &scenario.attack.optimizers[..],
            scenario.attack.lr_grid.values(),
        );
        summarise(defense, host.clone(), None, full, grid, engine)?;
    }
    for &attack in &scenario.adaptive.attacks {
        for (defense, host) in &models {
            let alpha = match defense.alpha() {
                Some(alpha) => alpha,
                None if !attack.needs_defended_layers() => 1.0,
                None => continue,
            };
            let mut rewritten = host.clone();
            rewritten
                .with_layer_chains(|layers| attack.apply_to_layers(layers, alpha, scenario.seed))
                .map_err(|e| TransformerError::Setting(format!("{attack}: {e}")))?;
            let overhead = rewritten.parameter_count() as i64 - host.parameter_count() as i64;
            let groups = attack.trainable(scenario.attack.trainable);
            let trainable = EncoderTrainable {
                layers: groups,
                // LoRA trains its adapters alone; the other rewrites fine-tune everything.
                norms: groups.weights || groups.compensation || groups.factors,
                embeddings: false,
                head: Some(groups),
            };
            let adaptive = Some((attack.describe(alpha), overhead));
            let grid = (&scenario.adaptive.optimizers[..], scenario.adaptive_rates());
            summarise(defense, rewritten, adaptive, trainable, grid, engine)?;
        }
    }
    for &part in &scenario.controls.parts {
        for (defense, host) in &models {
            let trainable = match part {
                ControlPart::Head => EncoderTrainable {
                    layers: Trainable::only(&[]),
                    norms: false,
                    embeddings: false,
                    head: Some(Trainable::default()),
                },
                ControlPart::BiasesAndNorms => EncoderTrainable {
                    layers: Trainable::only(&[ParamGroup::Biases]),
                    norms: true,
                    embeddings: false,
                    head: Some(Trainable::default()),
                },
            };
            let adaptive = Some((part.name().to_string(), 0));
            let grid = (&scenario.controls.optimizers[..], scenario.control_rates());
            summarise(defense, host.clone(), adaptive, trainable, grid, engine)?;
        }
    }
    Ok(targets)
}

/// What a model is before its attacks: size, utility, and how far its function on the run
/// engine is from the released model's (`compared`: texts and the released model's logits in
/// f64; each text's logits are compared relative to their norm).
fn summary(
    engine: &mut dyn Engine,
    batcher: &Batcher<'_>,
    data: &TopicData,
    (examples, theirs): (&[Example], &[f64]),
    defense: &Defense,
    host: &HostClassifier,
    adaptive: Option<(String, i64)>,
) -> Result<DefenseSummary, TransformerError> {
    let model = DeviceClassifier::upload(engine, host)?;
    let ours = model.logits(engine, batcher, examples)?;
    let classes = topic_names().len();
    let errors: Vec<f64> = (ours.chunks(classes).zip(theirs.chunks(classes)))
        .map(|(a, b)| {
            let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
            let norm: f64 = b.iter().map(|y| y * y).sum();
            (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
        })
        .map(|e| if e.is_finite() { e } else { f64::MAX })
        .collect();
    let max = errors.iter().copied().fold(0.0, f64::max);
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    // The held-out texts start with the utility sample.
    let utility_labels: Vec<usize> = data.utility_test.iter().map(|e| e.label).collect();
    let utility = accuracy(&ours[..utility_labels.len() * classes], &utility_labels);
    let label = match &adaptive {
        Some((name, _)) => format!("{} + {name}", defense.label()),
        None => defense.label(),
    };
    let sigma_1 = layer_sigmas_of(&host.encoder.linear).map_err(TransformerError::Setting)?;
    Ok(DefenseSummary {
        label,
        defense: defense.clone(),
        training: Vec::new(),
        adaptive_overhead: adaptive.as_ref().map(|(_, o)| *o),
        adaptive: adaptive.map(|(name, _)| name),
        parameter_count: host.parameter_count(),
        utility_after_defense: utility,
        function_error: vec![(engine.info().engine.clone(), max, mean)],
        sigma_1,
    })
}

/// One attack run: the target fine-tuned on the harmful topics at `lr`, judged on the
/// harmful held-out sample, then measured on the utility one.
#[allow(clippy::too_many_arguments)]
fn attack(
    engine: &mut dyn Engine,
    scenario: &TransformerScenario,
    variant: Option<String>,
    batcher: &Batcher<'_>,
    data: &TopicData,
    released: &ReleasedClassifier,
    target: &Target,
    (optimizer, lr): (OptimizerKind, f64),
) -> Result<RunRecord, TransformerError> {
    let settings = scenario.attack.settings(optimizer, lr);
    let started = std::time::Instant::now();
    let model = DeviceClassifier::upload(engine, &target.host)?;
    let batch = settings.batch_size.unwrap_or(16);
    let outcome = train(
        engine,
        &model,
        batcher,
        TrainJob {
            settings: &settings,
            trainable: target.trainable,
            draw: &mut |rng| draw(rng, &data.harmful_train, batch, false),
            judged_on: &data.harmful_test,
            seed: scenario.seed ^ ATTACK_SEED,
        },
        &mut |_, _, _| {},
    )?;
    let utility = model.measure(engine, batcher, &data.utility_test)?;
    let heldout = model.measure(engine, batcher, &data.harmful_heldout)?;
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut record = record(
        scenario, variant, engine, released, target, &settings, outcome, utility, wall_ms,
    );
    record.heldout_harmful_accuracy = Some(heldout.accuracy);
    Ok(record)
}

#[allow(clippy::too_many_arguments)]
fn record(
    scenario: &TransformerScenario,
    variant: Option<String>,
    engine: &dyn Engine,
    released: &ReleasedClassifier,
    target: &Target,
    attack: &TrainSettings,
    outcome: TrainOutcome,
    utility: Measured,
    wall_ms: f64,
) -> RunRecord {
    let summary = &target.summary;
    let k_per_layer = summary.defense.spec_def().map(|d| {
        let layers = d
            .layers
            .resolve(target.host.encoder.linear.len(), scenario.seed);
        (layers.unwrap_or_default().iter())
            .map(|&i| {
                let layer = &released.classifier.encoder.linear[i];
                let w = layer.matrix(FactorRole::Weight).expect("a weight");
                format!("{i}:{}", d.k.min(w.rows.min(w.cols)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    });
    let trainable = target.trainable;
    let mut trained = vec![trainable.layers.describe()];
    if trainable.norms {
        trained.push("layer norms".to_string());
    }
    if let Some(head) = trainable.head {
        trained.push(format!("head ({})", head.describe()));
    }
    let mut record = record_of(RecordParts {
        scenario: &scenario.name,
        variant,
        seed: scenario.seed,
        info: &engine.info(),
        summary,
        k_per_layer,
        task: Task::Harmful,
        run: (attack.optimizer.name(), attack.lr),
        attack,
        trained: (trainable.layers, trained.join("; ")),
        outcome,
        utility: UtilityMeasured {
            accuracy_before_defense: released.measured.utility_accuracy,
            loss_before_defense: released.measured.utility_loss,
            accuracy_after_attack: utility.accuracy,
            loss_after_attack: utility.loss,
        },
        wall_ms,
    });
    record.release = Some("relearning".to_string());
    record.harmful_accuracy_released = Some(released.measured.harmful_accuracy);
    record.pretrain_from_cache = Some(false);
    record
}
