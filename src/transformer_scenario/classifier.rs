//! The scenario's model: the pretrained encoder's first blocks and a linear head over the ten
//! topics, on the host in f64 (where SpecDef and the rewrites act) and on an engine (where it
//! trains and is measured). A training run keeps the MLP's semantics (`TrainOutcome`: the loss
//! and accuracy at step 0 and every `eval_every` steps, stopping at the target or at
//! divergence), so its records read as the MLP's do.

use super::topics::{Batcher, Example};
use crate::encoder::{
    ClassTarget, DeviceEncoder, EncoderHost, EncoderOptimizer, EncoderTrainable, record_logits,
    record_train_step, trainable_tensors,
};
use crate::engine::{Allocation, Engine, EngineError, Recording, Tensor};
use crate::model::{FactorOf, FactorRole, HostLayer, LayerOf, Matrix};
use crate::training::{TrainOutcome, TrainSettings, accuracy, mean_cross_entropy};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Texts per forward pass when measuring.
const EVAL_CHUNK: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct HostClassifier {
    pub encoder: EncoderHost,
    /// `classes x hidden`, on the mean-pooled embedding.
    pub head: HostLayer,
}

impl HostClassifier {
    /// The encoder with a fresh head (weights uniform in +-0.01, zero bias).
    pub fn new(encoder: EncoderHost, classes: usize, rng: &mut ChaCha8Rng) -> Self {
        let width = encoder.config.hidden_size;
        let weights = (0..classes * width)
            .map(|_| rng.random_range(-0.01..0.01))
            .collect();
        Self {
            encoder,
            head: HostLayer {
                factors: vec![FactorOf::plain(
                    FactorRole::Weight,
                    Matrix::new(classes, width, weights),
                )],
                bias: Matrix::zeros(1, classes),
            },
        }
    }

    pub fn parameter_count(&self) -> usize {
        self.encoder.parameter_count() + self.head.parameter_count()
    }

    /// Calls `f` with every layer chain: the encoder's linear maps, then the head (what an
    /// adaptive attacker rewrites, as an MLP's layers).
    pub fn with_layer_chains<T>(&mut self, f: impl FnOnce(&mut [HostLayer]) -> T) -> T {
        let mut layers = std::mem::take(&mut self.encoder.linear);
        layers.push(self.head.clone());
        let out = f(&mut layers);
        self.head = layers.pop().expect("the head is the last chain");
        self.encoder.linear = layers;
        out
    }
}

/// A classifier's parameters on an engine.
pub struct DeviceClassifier {
    pub encoder: DeviceEncoder,
    pub head: LayerOf<Tensor>,
    _owner: Allocation,
}

/// Accuracy and mean cross-entropy on a set of examples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    pub accuracy: f64,
    pub loss: f64,
}

impl DeviceClassifier {
    pub fn upload(engine: &mut dyn Engine, host: &HostClassifier) -> Result<Self, EngineError> {
        let encoder = DeviceEncoder::upload(engine, &host.encoder)?;
        let mut owner = Allocation::new(engine);
        let head = host.head.try_map(0, &mut |key, m: &Matrix| {
            owner.tensor_from(engine, &format!("head.{key}"), m.rows, m.cols, &m.values)
        })?;
        Ok(Self {
            encoder,
            head,
            _owner: owner,
        })
    }

    pub fn download(&self, engine: &mut dyn Engine) -> Result<HostClassifier, EngineError> {
        let encoder = self.encoder.download(engine)?;
        let head = self.head.try_map(0, &mut |_, t: &Tensor| {
            Ok::<_, EngineError>(Matrix::new(t.rows(), t.cols(), engine.read_one(*t)?))
        })?;
        Ok(HostClassifier { encoder, head })
    }

    /// The logits of `examples` (`examples x classes`, row-major).
    pub fn logits(
        &self,
        engine: &mut dyn Engine,
        batcher: &Batcher<'_>,
        examples: &[Example],
    ) -> Result<Vec<f64>, super::TransformerError> {
        let mut logits = Vec::new();
        for chunk in examples.chunks(EVAL_CHUNK) {
            let batch = batcher.batch(chunk)?;
            let mut rec = Recording::new();
            let mut owner = Allocation::new(engine);
            let (out, _run) = record_logits(
                engine,
                &mut rec,
                &self.encoder,
                &self.head,
                &batch,
                &mut owner,
            )?;
            engine.run(&rec)?;
            logits.extend(engine.read_one(out)?);
        }
        Ok(logits)
    }

    pub fn measure(
        &self,
        engine: &mut dyn Engine,
        batcher: &Batcher<'_>,
        examples: &[Example],
    ) -> Result<Measured, super::TransformerError> {
        let logits = self.logits(engine, batcher, examples)?;
        let labels: Vec<usize> = examples.iter().map(|e| e.label).collect();
        Ok(Measured {
            accuracy: accuracy(&logits, &labels),
            loss: mean_cross_entropy(&logits, &labels),
        })
    }
}

/// What one training run draws and is judged on.
pub struct TrainJob<'a> {
    pub settings: &'a TrainSettings,
    pub trainable: EncoderTrainable,
    /// The next batch: examples and their targets.
    pub draw: &'a mut dyn FnMut(&mut ChaCha8Rng) -> Vec<(&'a Example, ClassTarget)>,
    /// The examples whose accuracy is the run's (against the target, if any).
    pub judged_on: &'a [Example],
    /// Seeds the batches (the same sequence for every run given the same seed) and the
    /// second-order probes.
    pub seed: u64,
}

/// Trains `model` in place; each `eval_every` steps measures the accuracy on `judged_on` and
/// calls `progress` with (steps done, loss, accuracy).
pub fn train(
    engine: &mut dyn Engine,
    model: &DeviceClassifier,
    batcher: &Batcher<'_>,
    job: TrainJob<'_>,
    progress: &mut dyn FnMut(usize, f64, f64),
) -> Result<TrainOutcome, super::TransformerError> {
    use rand::SeedableRng;
    let settings = job.settings;
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
    let trained = trainable_tensors(&model.encoder, &model.head, job.trainable);
    let mut optimizer = EncoderOptimizer::new(
        engine,
        settings.optimizer,
        settings.lr,
        settings.hyper,
        job.seed,
    )?;
    optimizer.adahessian = settings.second_order.adahessian;
    optimizer.muon = settings.second_order.muon;
    let mut outcome = TrainOutcome::empty();
    // Step 0: the first batch's loss and the accuracy before any update.
    let first = (job.draw)(&mut rng);
    let (examples, targets): (Vec<&Example>, Vec<ClassTarget>) = first.iter().copied().unzip();
    let logits = model.logits(
        engine,
        batcher,
        &examples.into_iter().cloned().collect::<Vec<_>>(),
    )?;
    let loss0 = batch_loss(&logits, &targets);
    let acc0 = model.measure(engine, batcher, job.judged_on)?.accuracy;
    progress(0, loss0, acc0);
    let mut batch = Some(first);
    if outcome.take(0, loss0, acc0, settings) {
        return Ok(outcome);
    }
    for step in 1..=settings.steps {
        let drawn = batch.take().unwrap_or_else(|| (job.draw)(&mut rng));
        let (examples, targets): (Vec<&Example>, Vec<ClassTarget>) = drawn.into_iter().unzip();
        let tokens = batcher.batch(examples)?;
        optimizer.lr = settings
            .schedule
            .lr_at(settings.lr, step - 1, settings.steps);
        let recorded = record_train_step(
            engine,
            &model.encoder,
            &model.head,
            &tokens,
            &targets,
            &trained,
            &mut optimizer,
        )?;
        engine.run(&recorded.recording)?;
        if step % settings.eval_every.max(1) == 0 || step == settings.steps {
            let loss = engine.read_one(recorded.loss)?[0] / targets.len() as f64;
            let acc = model.measure(engine, batcher, job.judged_on)?.accuracy;
            progress(step, loss, acc);
            if outcome.take(step, loss, acc, settings) {
                break;
            }
        }
    }
    Ok(outcome)
}

/// The mean cross-entropy of a batch's logits against its targets (a uniform target's: the
/// mean over the classes), in f64 on the host.
fn batch_loss(logits: &[f64], targets: &[ClassTarget]) -> f64 {
    let classes = logits.len() / targets.len().max(1);
    let rows = logits.chunks(classes).zip(targets);
    let total: f64 = rows
        .map(|(row, target)| match target {
            ClassTarget::Label(l) => mean_cross_entropy(row, &[*l]),
            ClassTarget::Uniform => {
                (0..classes)
                    .map(|c| mean_cross_entropy(row, &[c]))
                    .sum::<f64>()
                    / classes as f64
            }
        })
        .sum();
    total / targets.len().max(1) as f64
}
