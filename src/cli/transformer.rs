//! `specdef transformer-finetune`: fine-tunes the pretrained encoder (its first blocks) with a
//! fresh classification head on WordNet topics, undefended or with SpecDef on its attention
//! maps, and reports the loss per step and the held-out accuracy: whether the defence slows a
//! first-order (Adam) fine-tuning of a real transformer. A first measurement ahead of the full
//! scenario (release, suppression, the attack grid), not a claim of the paper's.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use specdef::data::wordnet::{Gloss, HARMFUL_TOPICS, UTILITY_TOPICS, category_index, parse_nouns};
use specdef::defense::{CompensationForm, LayerSelection, SpecDef};
use specdef::encoder::{
    self, ClassTarget, DeviceEncoder, EncoderHost, EncoderOptimizer, EncoderTrainable, TokenBatch,
    record_logits, record_train_step, trainable_tensors,
};
use specdef::engine::Allocation;
use specdef::engine_choice::EngineChoice;
use specdef::model::{FactorOf, FactorRole, HostLayer, LayerOf, Matrix, ParamGroup, Trainable};
use specdef::tokenizer::WordPiece;
use specdef::training::{OptimizerHyper, OptimizerKind};
use specdef::transformer_files::{FETCH_HINT, model_dir, wordnet_dir};
use specdef::{Engine, Recording, Tensor};
use std::path::Path;

/// The seed of the held-out sample, fixed so every run scores the same glosses.
const TEST_SAMPLE_SEED: u64 = 0x5eed_7e57;

/// What to run (the command's flags).
#[derive(clap::Args)]
pub struct FinetuneSettings {
    /// How many of the encoder's 6 blocks to keep.
    #[arg(long, default_value_t = 2)]
    pub blocks: usize,
    /// harmful (animal, plant, body, food, substance) or utility (artifact, person, act,
    /// communication, location).
    #[arg(long, default_value = "harmful")]
    pub topics: String,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per gloss (with [CLS] and [SEP]; longer glosses are truncated).
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// SpecDef's alpha on the attention maps of every block; undefended without it.
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long, default_value_t = 25)]
    pub k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out glosses scored before and after.
    #[arg(long, default_value_t = 500)]
    pub test_size: usize,
    /// What trains: all (everything but the embedding tables), head (a linear probe on frozen
    /// features), biases-and-norms (with the head: the parameters outside SpecDef's reach).
    #[arg(long, value_enum, default_value_t = TrainedParts::All)]
    pub train: TrainedParts,
}

/// The parts a fine-tuning run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainedParts {
    All,
    Head,
    BiasesAndNorms,
}

impl TrainedParts {
    fn trainable(self) -> EncoderTrainable {
        let all = EncoderTrainable::default();
        match self {
            TrainedParts::All => all,
            TrainedParts::Head => EncoderTrainable {
                layers: Trainable::only(&[]),
                norms: false,
                ..all
            },
            TrainedParts::BiasesAndNorms => EncoderTrainable {
                layers: Trainable::only(&[ParamGroup::Biases]),
                ..all
            },
        }
    }
}

#[derive(Serialize)]
struct StepLine {
    step: usize,
    loss: f64,
}

#[derive(Serialize)]
struct Summary<'a> {
    engine: String,
    blocks: usize,
    topics: &'a [&'a str],
    defence: String,
    trained: TrainedParts,
    steps: usize,
    batch: usize,
    tokens: usize,
    lr: f64,
    seed: u64,
    test_examples: usize,
    /// The accuracy of always answering the most common topic of the held-out glosses.
    test_majority_share: f64,
    test_accuracy_before: f64,
    test_accuracy_after: f64,
    first_loss: f64,
    last_loss: f64,
    seconds: f64,
}

pub fn finetune(settings: &FinetuneSettings, choice: EngineChoice, out: &Path) -> Result<()> {
    crate::writable(out)?;
    if settings.batch == 0 || settings.test_size == 0 {
        bail!("--batch and --test-size must be at least 1");
    }
    let topics: &[&str] = match settings.topics.as_str() {
        "harmful" => &HARMFUL_TOPICS,
        "utility" => &UTILITY_TOPICS,
        other => bail!("--topics must be harmful or utility, got {other:?}"),
    };
    let folder = model_dir();
    let data_noun = wordnet_dir().join("data.noun");
    for needed in [folder.join("model.safetensors"), data_noun.clone()] {
        if !needed.is_file() {
            bail!("{} is missing: {FETCH_HINT}", needed.display());
        }
    }
    let (config, weights) = encoder::load(&folder, Some(settings.blocks))?;
    let tokenizer = WordPiece::from_file(&folder.join("tokenizer.json"))?;
    let text = std::fs::read_to_string(&data_noun)
        .with_context(|| format!("reading {}", data_noun.display()))?;
    let classes: Vec<usize> = topics
        .iter()
        .map(|t| category_index(t).expect("a noun topic"))
        .collect();
    let labelled: Vec<(Gloss, usize)> = parse_nouns(&text)?
        .into_iter()
        .filter_map(|g| {
            classes
                .iter()
                .position(|&c| c == g.category)
                .map(|label| (g, label))
        })
        .collect();
    let (mut test, train): (Vec<_>, Vec<_>) =
        labelled.into_iter().partition(|(g, _)| g.is_test(10));
    // data.noun groups synsets by topic: a fixed shuffle (the same for every run) makes the
    // first test_size held-out glosses a sample of every topic.
    test.shuffle(&mut ChaCha8Rng::seed_from_u64(TEST_SAMPLE_SEED));
    let test = &test[..settings.test_size.min(test.len())];

    let mut host = EncoderHost::from_weights(&config, &weights);
    let defence = match settings.alpha {
        None => "none".to_string(),
        Some(alpha) => {
            // Q, K, V and the attention's output of every block (the paper: a few layers, k 25).
            let attention: Vec<usize> = (0..settings.blocks)
                .flat_map(|b| (0..4).map(move |j| 6 * b + j))
                .collect();
            let specdef = SpecDef {
                alpha,
                k: settings.k,
                layers: LayerSelection::Indices(attention),
                compensate: true,
                compensation: CompensationForm::Full,
            };
            specdef.apply_to_layers(&mut host.linear, settings.seed)?;
            format!(
                "specdef alpha {alpha:e} k {} on the attention maps",
                settings.k
            )
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let width = config.hidden_size;
    let head = HostLayer {
        factors: vec![FactorOf::plain(
            FactorRole::Weight,
            Matrix::new(
                topics.len(),
                width,
                (0..topics.len() * width)
                    .map(|_| rng.random_range(-0.01..0.01))
                    .collect(),
            ),
        )],
        bias: Matrix::zeros(1, topics.len()),
    };

    let mut engine = crate::open(choice)?;
    let e = engine.as_mut();
    let encoder = DeviceEncoder::upload(e, &host).context("uploading the encoder")?;
    let mut owner = Allocation::new(e);
    let head: LayerOf<Tensor> = head.try_map(0, &mut |_, m: &Matrix| {
        owner.tensor_from(e, "head", m.rows, m.cols, &m.values)
    })?;
    let encode = |examples: &[&(Gloss, usize)]| -> Result<(TokenBatch, Vec<usize>)> {
        let encodings = examples
            .iter()
            .map(|(g, _)| tokenizer.encode(&g.text, settings.tokens))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            TokenBatch::new(&encodings),
            examples.iter().map(|(_, l)| *l).collect(),
        ))
    };
    let accuracy = |e: &mut dyn Engine| -> Result<f64> {
        let mut correct = 0;
        for chunk in test.chunks(64) {
            let (batch, labels) = encode(&chunk.iter().collect::<Vec<_>>())?;
            let mut rec = Recording::new();
            let mut owner = Allocation::new(e);
            let (logits, _run) = record_logits(e, &mut rec, &encoder, &head, &batch, &mut owner)?;
            e.run(&rec)?;
            let values = e.read_one(logits)?;
            for (row, label) in values.chunks(topics.len()).zip(labels) {
                let best = (0..row.len())
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0);
                correct += usize::from(best == label);
            }
        }
        Ok(correct as f64 / test.len().max(1) as f64)
    };
    let accuracy_before = accuracy(e)?;
    let trained = trainable_tensors(&encoder, &head, settings.train.trainable());
    let mut adam = EncoderOptimizer::new(
        e,
        OptimizerKind::Adam,
        settings.lr,
        OptimizerHyper::default(),
        settings.seed,
    )?;
    let bar = ProgressBar::new(settings.steps as u64).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps, {elapsed} elapsed, about {eta} left, loss {msg}",
        )
        .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let mut lines = Vec::new();
    for step in 0..settings.steps {
        let examples: Vec<&(Gloss, usize)> = (0..settings.batch)
            .map(|_| &train[rng.random_range(0..train.len())])
            .collect();
        let (batch, labels) = encode(&examples)?;
        let targets: Vec<ClassTarget> = labels.into_iter().map(ClassTarget::Label).collect();
        let recorded =
            record_train_step(e, &encoder, &head, &batch, &targets, &trained, &mut adam)?;
        e.run(&recorded.recording)?;
        let loss = e.read_one(recorded.loss)?[0] / settings.batch as f64;
        bar.inc(1);
        bar.set_message(format!("{loss:.4}"));
        lines.push(StepLine { step, loss });
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let accuracy_after = accuracy(e)?;
    let summary = Summary {
        engine: e.info().to_string(),
        blocks: settings.blocks,
        topics,
        defence,
        trained: settings.train,
        steps: settings.steps,
        batch: settings.batch,
        tokens: settings.tokens,
        lr: settings.lr,
        seed: settings.seed,
        test_examples: test.len(),
        test_majority_share: majority_share(test, topics.len()),
        test_accuracy_before: accuracy_before,
        test_accuracy_after: accuracy_after,
        first_loss: lines.first().map_or(f64::NAN, |l| l.loss),
        last_loss: lines.last().map_or(f64::NAN, |l| l.loss),
        seconds,
    };
    let mut text = serde_json::to_string(&summary)? + "\n";
    for line in &lines {
        text += &(serde_json::to_string(line)? + "\n");
    }
    specdef::atomic_file::write_atomically(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The share of the most common label among `examples`.
fn majority_share(examples: &[(Gloss, usize)], classes: usize) -> f64 {
    let mut counts = vec![0usize; classes];
    examples.iter().for_each(|(_, label)| counts[*label] += 1);
    counts.iter().copied().max().unwrap_or(0) as f64 / examples.len().max(1) as f64
}
