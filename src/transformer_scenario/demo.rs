//! The transformer demo of the app (natively and in the browser): a released classifier, a
//! sentence the user types, and a short attack on the harmful topics against the released model
//! and its SpecDef-defended twin, with the sentence's class probabilities and the harmful
//! held-out accuracy before and after. Polled as a `ScenarioSession` is: `advance` never waits
//! for the GPU, so the page's event loop (which completes readbacks) keeps running.

use super::TransformerError;
use super::classifier::{DeviceClassifier, HostClassifier};
use super::released::ReleasedClassifier;
use super::runner::{ATTACK_SEED, defend, full_fine_tuning};
use super::topics::{Batcher, Example, TopicData, draw, topic_names};
use crate::data::wordnet::UTILITY_TOPICS;
use crate::encoder::{EncoderOptimizer, record_logits, record_train_step, trainable_tensors};
use crate::engine::{Allocation, Engine, ReadTicket, Recording, Tensor};
use crate::tokenizer::WordPiece;
use crate::training::{OptimizerHyper, OptimizerKind, accuracy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Held-out harmful glosses judged with the sentence in one forward pass.
const JUDGED: usize = 63;

/// What the demo reads: the released classifier, its tokenizer and the topic task.
pub struct DemoInputs {
    pub released: ReleasedClassifier,
    pub tokenizer: WordPiece,
    pub data: TopicData,
}

impl DemoInputs {
    /// From the files' contents: a released classifier (`specdef release-transformer`), the
    /// encoder's tokenizer.json and WordNet's data.noun.
    pub fn from_bytes(
        released: &[u8],
        tokenizer_json: &str,
        data_noun: &str,
    ) -> Result<Self, TransformerError> {
        let released = ReleasedClassifier::decode(released)?;
        let tokenizer = WordPiece::from_tokenizer_json(tokenizer_json)?;
        let data = TopicData::from_data_noun(data_noun, released.scenario.encoder.test_size)?;
        Ok(Self {
            released,
            tokenizer,
            data,
        })
    }

    /// From a released classifier file and the cache folder's tokenizer and WordNet; errors
    /// name the file and how to make it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_files(released: &std::path::Path) -> Result<Self, String> {
        use crate::transformer_files::{FETCH_HINT, model_dir, wordnet_dir};
        let read = |path: &std::path::Path, hint: &str| {
            crate::input_file::read_bounded(path, crate::input_file::MAX_TENSOR_FILE_BYTES)
                .map_err(|e| format!("{}: {e} ({hint})", path.display()))
        };
        let released_bytes = read(
            released,
            &format!(
                "make it with `specdef release-transformer --out {}`",
                released.display()
            ),
        )?;
        let text = |path: std::path::PathBuf| {
            String::from_utf8(read(&path, FETCH_HINT)?)
                .map_err(|_| format!("{}: not UTF-8 text", path.display()))
        };
        let tokenizer = text(model_dir().join("tokenizer.json"))?;
        let data_noun = text(wordnet_dir().join("data.noun"))?;
        Self::from_bytes(&released_bytes, &tokenizer, &data_noun)
            .map_err(|e| format!("{}: {e}", released.display()))
    }

    fn batcher(&self) -> Batcher<'_> {
        Batcher {
            tokenizer: &self.tokenizer,
            tokens: self.released.scenario.encoder.tokens,
        }
    }

    /// The sentence's WordPiece tokens as the model sees them ([CLS] and [SEP] included,
    /// padding left out, truncated to the scenario's length).
    pub fn tokens_of(&self, text: &str) -> Result<Vec<String>, TransformerError> {
        let encoding = (self.tokenizer).encode(text, self.released.scenario.encoder.tokens)?;
        Ok((encoding.ids.iter().zip(&encoding.attention_mask))
            .filter(|&(_, &mask)| mask == 1)
            .map(|(&id, _)| self.tokenizer.token(id).unwrap_or("[?]").to_string())
            .collect())
    }
}

/// The attack the demo runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoSettings {
    pub text: String,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub steps: usize,
}

impl Default for DemoSettings {
    /// Adam at 1e-4 for 10 steps: the rate at which the undefended encoder of the transformer
    /// scenario relearned within 10 steps (docs/results/transformer).
    fn default() -> Self {
        Self {
            text: "wolf: any of various predatory carnivorous canine mammals".to_string(),
            optimizer: OptimizerKind::Adam,
            lr: 1e-4,
            steps: 10,
        }
    }
}

/// One model's sentence probabilities and harmful accuracy before and after the attack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoModelResult {
    pub model: String,
    pub probabilities_before: Vec<f64>,
    pub probabilities_after: Vec<f64>,
    pub harmful_accuracy_before: f64,
    pub harmful_accuracy_after: f64,
}

/// The demo's results, as the page hands them to scripts (`window.specdefTransformer`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoOutcome {
    pub settings: DemoSettings,
    pub tokens: Vec<String>,
    pub topics: Vec<String>,
    /// Topics from this index on are the harmful ones.
    pub first_harmful_topic: usize,
    pub batch_size: usize,
    /// How many held-out harmful glosses the accuracies are measured on.
    pub judged_on: usize,
    pub models: Vec<DemoModelResult>,
}

/// The model under attack now.
struct Attacked {
    label: String,
    model: DeviceClassifier,
    trained: Vec<Tensor>,
    optimizer: EncoderOptimizer,
    rng: ChaCha8Rng,
    steps_done: usize,
    before: Option<(Vec<f64>, f64)>,
}

/// A readback in flight: the sentence's and the judged glosses' logits.
struct PendingMeasure {
    ticket: ReadTicket,
    _owner: Allocation,
}

pub struct AttackDemo {
    settings: DemoSettings,
    /// The models still to attack (the defended one is made on the first `advance`).
    waiting: Vec<(String, HostClassifier)>,
    defended: bool,
    attacked: Option<Attacked>,
    pending: Option<PendingMeasure>,
    judged: Vec<Example>,
    tokens: Vec<String>,
    results: Vec<DemoModelResult>,
}

impl AttackDemo {
    /// Refuses an empty sentence or a setting the encoder's optimiser does not build.
    pub fn start(inputs: &DemoInputs, settings: DemoSettings) -> Result<Self, TransformerError> {
        if settings.text.trim().is_empty() {
            return Err(TransformerError::Setting(
                "type a sentence to classify".into(),
            ));
        }
        if !EncoderOptimizer::is_built(settings.optimizer)
            || !settings.lr.is_finite()
            || settings.lr <= 0.0
        {
            return Err(TransformerError::Setting(format!(
                "the demo attacks with a first-order optimiser or Muon or AdaHessian at a \
                 positive rate, not {} at {}",
                settings.optimizer.name(),
                settings.lr
            )));
        }
        let judged = (inputs.data.harmful_test.iter().take(JUDGED))
            .cloned()
            .collect();
        Ok(Self {
            tokens: inputs.tokens_of(&settings.text)?,
            settings,
            waiting: vec![("undefended".to_string(), inputs.released.classifier.clone())],
            defended: false,
            attacked: None,
            pending: None,
            judged,
            results: Vec::new(),
        })
    }

    pub fn is_done(&self) -> bool {
        self.defended && self.waiting.is_empty() && self.attacked.is_none()
    }

    /// What it is doing, for the user.
    pub fn describe(&self) -> String {
        match &self.attacked {
            _ if !self.defended => "applying SpecDef to the encoder's linear maps".to_string(),
            None if self.is_done() => "done".to_string(),
            None => "uploading the next model".to_string(),
            Some(a) if a.before.is_none() => format!("{}: measuring before the attack", a.label),
            Some(a) if a.steps_done < self.settings.steps => format!(
                "{}: attack step {}/{}",
                a.label,
                a.steps_done + 1,
                self.settings.steps
            ),
            Some(a) => format!("{}: measuring after the attack", a.label),
        }
    }

    pub fn outcome(&self, inputs: &DemoInputs) -> DemoOutcome {
        let scenario = &inputs.released.scenario;
        DemoOutcome {
            settings: self.settings.clone(),
            tokens: self.tokens.clone(),
            topics: topic_names().iter().map(|t| t.to_string()).collect(),
            first_harmful_topic: UTILITY_TOPICS.len(),
            batch_size: scenario.attack.batch_size.unwrap_or(16),
            judged_on: self.judged.len(),
            models: self.results.clone(),
        }
    }

    /// Does one piece of work (applying SpecDef, an upload, an attack step, or a measurement);
    /// returns false where it waits for a readback (call again later), true otherwise.
    pub fn advance(
        &mut self,
        engine: &mut dyn Engine,
        inputs: &DemoInputs,
    ) -> Result<bool, TransformerError> {
        if !self.defended {
            self.waiting.push(defended(&inputs.released)?);
            self.defended = true;
            return Ok(true);
        }
        if let Some(pending) = &mut self.pending {
            let Some(values) = engine.poll_read(&mut pending.ticket)? else {
                return Ok(false);
            };
            self.pending = None;
            self.measured(&values[0]);
            return Ok(true);
        }
        let Some(attacked) = &mut self.attacked else {
            if self.waiting.is_empty() {
                return Ok(true);
            }
            let (label, host) = self.waiting.remove(0);
            self.attacked = Some(self.upload(engine, inputs, label, &host)?);
            self.begin_measure(engine, inputs)?;
            return Ok(true);
        };
        if attacked.steps_done == self.settings.steps {
            self.begin_measure(engine, inputs)?;
            return Ok(true);
        }
        let scenario = &inputs.released.scenario;
        let batch = scenario.attack.batch_size.unwrap_or(16);
        let drawn = draw(&mut attacked.rng, &inputs.data.harmful_train, batch, false);
        let (examples, targets): (Vec<&Example>, Vec<_>) = drawn.into_iter().unzip();
        let tokens = inputs.batcher().batch(examples)?;
        let step = record_train_step(
            engine,
            &attacked.model.encoder,
            &attacked.model.head,
            &tokens,
            &targets,
            &attacked.trained,
            &mut attacked.optimizer,
        )?;
        engine.run(&step.recording)?;
        attacked.steps_done += 1;
        Ok(true)
    }

    fn upload(
        &self,
        engine: &mut dyn Engine,
        inputs: &DemoInputs,
        label: String,
        host: &HostClassifier,
    ) -> Result<Attacked, TransformerError> {
        let scenario = &inputs.released.scenario;
        let model = DeviceClassifier::upload(engine, host)?;
        let trained = trainable_tensors(&model.encoder, &model.head, full_fine_tuning(scenario));
        let seed = scenario.seed ^ ATTACK_SEED;
        let optimizer = EncoderOptimizer::new(
            engine,
            self.settings.optimizer,
            self.settings.lr,
            OptimizerHyper::default(),
            seed,
        )?;
        Ok(Attacked {
            label,
            model,
            trained,
            optimizer,
            // Both models see the same batches.
            rng: ChaCha8Rng::seed_from_u64(seed),
            steps_done: 0,
            before: None,
        })
    }

    /// Records the logits of the sentence and the judged glosses, and starts reading them.
    fn begin_measure(
        &mut self,
        engine: &mut dyn Engine,
        inputs: &DemoInputs,
    ) -> Result<(), TransformerError> {
        let attacked = self.attacked.as_ref().expect("a model is under attack");
        let sentence = Example {
            text: self.settings.text.clone(),
            label: 0,
        };
        let batch = inputs
            .batcher()
            .batch([&sentence].into_iter().chain(&self.judged))?;
        let mut rec = Recording::new();
        let mut owner = Allocation::new(engine);
        let (logits, _run) = record_logits(
            engine,
            &mut rec,
            &attacked.model.encoder,
            &attacked.model.head,
            &batch,
            &mut owner,
        )?;
        engine.run(&rec)?;
        self.pending = Some(PendingMeasure {
            ticket: engine.begin_read(&[logits])?,
            _owner: owner,
        });
        Ok(())
    }

    /// Takes a measurement's logits: the model's state before the attack, or its result after.
    fn measured(&mut self, logits: &[f64]) {
        let classes = topic_names().len();
        let (sentence, judged) = logits.split_at(classes);
        let labels: Vec<usize> = self.judged.iter().map(|e| e.label).collect();
        let measure = (softmax(sentence), accuracy(judged, &labels));
        let attacked = self.attacked.as_mut().expect("a model is under attack");
        match attacked.before.take() {
            None => attacked.before = Some(measure),
            Some((probabilities_before, harmful_accuracy_before)) => {
                let attacked = self.attacked.take().expect("checked above");
                self.results.push(DemoModelResult {
                    model: attacked.label,
                    probabilities_before,
                    probabilities_after: measure.0,
                    harmful_accuracy_before,
                    harmful_accuracy_after: measure.1,
                });
            }
        }
    }
}

/// The released model with SpecDef as the scenario applies it (at its first alpha).
fn defended(released: &ReleasedClassifier) -> Result<(String, HostClassifier), TransformerError> {
    let scenario = &released.scenario;
    let alpha = *(scenario.defense.alphas.first())
        .ok_or_else(|| TransformerError::Setting("the scenario names no SpecDef alpha".into()))?;
    let (_, host) = defend(&released.classifier, scenario, alpha)?;
    Ok((
        format!("SpecDef alpha={alpha:.0e} k={}", scenario.defense.k),
        host,
    ))
}

/// Class probabilities of one row of logits (NaN where the logits are not finite: a diverged
/// attack is a measured outcome, shown as such).
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}
