//! Fine-tuning the encoder as a classifier (a head on the pooled embedding, cross-entropy,
//! reverse-mode gradient, Adam): the loss falls on a small batch, the step agrees across
//! engines, and only the chosen parts train. On the fetched model's first block (without it
//! these tests say so and pass, unless SPECDEF_REQUIRE_TRANSFORMER=1).

mod common;

use specdef::encoder::{
    self, ClassTarget, DeviceEncoder, EncoderHost, EncoderOptimizer, EncoderTrainable, TokenBatch,
    record_train_step, trainable_tensors,
};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::model::{FactorOf, FactorRole, HostLayer, LayerOf, Matrix, ParamGroup, Trainable};
use specdef::tokenizer::WordPiece;
use specdef::training::{OptimizerHyper, OptimizerKind};
use specdef::transformer_files::model_dir;
use specdef::{Engine, Tensor};

/// Two glosses each of three WordNet topics (animal, food, artifact).
const GLOSSES: [(&str, usize); 6] = [
    ("dog: a member of the genus Canis", 0),
    (
        "horse: solid-hoofed herbivorous quadruped domesticated since prehistoric times",
        0,
    ),
    (
        "bread: food made from dough of flour or meal and usually raised with yeast",
        1,
    ),
    (
        "apple: fruit with red or yellow or green skin and sweet to tart crisp whitish flesh",
        1,
    ),
    (
        "hammer: a hand tool with a heavy rigid head and a handle",
        2,
    ),
    (
        "chair: a seat for one person, with a support for the back",
        2,
    ),
];
const CLASSES: usize = 3;

fn setup() -> Option<(EncoderHost, TokenBatch, HostLayer)> {
    let folder = model_dir();
    if !common::fetched(&folder.join("model.safetensors")) {
        return None;
    }
    let (config, weights) = encoder::load(&folder, Some(1)).unwrap();
    let tokenizer = WordPiece::from_file(&folder.join("tokenizer.json")).unwrap();
    let encodings: Vec<_> = GLOSSES
        .iter()
        .map(|(t, _)| tokenizer.encode(t, 24).unwrap())
        .collect();
    let width = config.hidden_size;
    let head = HostLayer {
        factors: vec![FactorOf::plain(
            FactorRole::Weight,
            Matrix::new(
                CLASSES,
                width,
                common::uniform(&mut common::rng(5), CLASSES * width, 0.01),
            ),
        )],
        bias: Matrix::zeros(1, CLASSES),
    };
    Some((
        EncoderHost::from_weights(&config, &weights),
        TokenBatch::new(&encodings),
        head,
    ))
}

fn labels() -> Vec<usize> {
    GLOSSES.iter().map(|&(_, l)| l).collect()
}

fn adam(e: &dyn Engine) -> EncoderOptimizer {
    EncoderOptimizer::new(e, OptimizerKind::Adam, 1e-3, OptimizerHyper::default(), 0).unwrap()
}

/// Each gloss's label as a training target.
fn targets() -> Vec<ClassTarget> {
    labels().into_iter().map(ClassTarget::Label).collect()
}

/// The mean loss before each of `steps` steps, on `e`.
fn losses(
    e: &mut dyn Engine,
    setup: &(EncoderHost, TokenBatch, HostLayer),
    steps: usize,
    trainable: EncoderTrainable,
) -> Vec<f64> {
    let (host, batch, head) = setup;
    let encoder = DeviceEncoder::upload(e, host).unwrap();
    let mut owner = specdef::engine::Allocation::new(e);
    let head: LayerOf<Tensor> = head
        .try_map(0, &mut |_, m: &Matrix| {
            owner.tensor_from(e, "head", m.rows, m.cols, &m.values)
        })
        .unwrap();
    let trained = trainable_tensors(&encoder, &head, trainable);
    let mut adam = adam(e);
    (0..steps)
        .map(|_| {
            let step =
                record_train_step(e, &encoder, &head, batch, &targets(), &trained, &mut adam)
                    .unwrap();
            e.run(&step.recording).unwrap();
            e.read_one(step.loss).unwrap()[0] / GLOSSES.len() as f64
        })
        .collect()
}

#[test]
fn fine_tuning_lowers_the_loss_and_agrees_across_engines() {
    let Some(setup) = setup() else { return };
    let exact = losses(
        &mut CpuEngine64::new(),
        &setup,
        6,
        EncoderTrainable::default(),
    );
    // The head starts near zero: the loss starts near ln 3, and memorising six glosses is quick.
    assert!((exact[0] - 3f64.ln()).abs() < 0.05, "{exact:?}");
    assert!(
        exact[5] < 0.5 * exact[0],
        "the loss fell from {} to {}",
        exact[0],
        exact[5]
    );
    let check = |name: &str, got: Vec<f64>| {
        for (step, (g, want)) in got.iter().zip(&exact).enumerate() {
            assert!(
                (g - want).abs() < 1e-3 * want.max(0.1),
                "{name} step {step}: {g} against {want}"
            );
        }
    };
    check(
        "cpu-f32",
        losses(
            &mut CpuEngine32::new(),
            &setup,
            6,
            EncoderTrainable::default(),
        ),
    );
    if let Some(mut gpu) = common::gpu() {
        check(
            "gpu",
            losses(&mut *gpu, &setup, 6, EncoderTrainable::default()),
        );
    }
}

#[test]
fn only_the_chosen_parts_train() {
    let Some((host, batch, head)) = setup() else {
        return;
    };
    let mut e = CpuEngine64::new();
    let encoder = DeviceEncoder::upload(&mut e, &host).unwrap();
    let mut owner = specdef::engine::Allocation::new(&e);
    let head: LayerOf<Tensor> = head
        .try_map(0, &mut |_, m: &Matrix| {
            owner.tensor_from(&mut e, "head", m.rows, m.cols, &m.values)
        })
        .unwrap();
    // The control outside SpecDef's reach: biases and layer norms only.
    let biases_and_norms = EncoderTrainable {
        layers: Trainable::only(&[ParamGroup::Biases]),
        norms: true,
        embeddings: false,
        head: None,
    };
    let trained = trainable_tensors(&encoder, &head, biases_and_norms);
    // 6 biases and 2 norms (2 tensors each) in the block, the embeddings' norm.
    assert_eq!(trained.len(), 6 + 2 * 2 + 2);
    let query = encoder.linear[0].factors[0].matrix;
    let query_bias = encoder.linear[0].bias;
    let (weight_before, bias_before) =
        (e.read_one(query).unwrap(), e.read_one(query_bias).unwrap());
    let mut adam = adam(&e);
    let step = record_train_step(
        &mut e,
        &encoder,
        &head,
        &batch,
        &targets(),
        &trained,
        &mut adam,
    )
    .unwrap();
    e.run(&step.recording).unwrap();
    assert_eq!(
        e.read_one(query).unwrap(),
        weight_before,
        "the query weight is frozen"
    );
    assert_ne!(
        e.read_one(query_bias).unwrap(),
        bias_before,
        "the query bias trains"
    );
    let message = record_train_step(
        &mut e,
        &encoder,
        &head,
        &batch,
        &[ClassTarget::Label(0)],
        &trained,
        &mut adam,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(message.contains("1 targets for 6 sequences"), "{message}");
}

#[test]
fn the_finetune_command_writes_its_summary_and_the_loss_of_every_step() {
    if setup().is_none() {
        return;
    }
    let out = common::scratch("transformer-finetune", "summary").join("run.jsonl");
    let args = [
        "transformer-finetune",
        "--blocks",
        "1",
        "--steps",
        "3",
        "--batch",
        "4",
        "--test-size",
        "8",
        "--engine",
        "cpu",
        "--alpha",
        "1e4",
        "--out",
        out.to_str().unwrap(),
    ];
    common::succeeded(common::specdef_command(&args, &[]));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[0]["defence"],
        "specdef alpha 1e4 k 25 on the attention maps"
    );
    assert_eq!(lines[0]["test_examples"], 8);
    assert_eq!(lines[0]["trained"], "all");
    for (step, line) in lines[1..].iter().enumerate() {
        assert_eq!(line["step"], step);
        assert!(line["loss"].as_f64().unwrap().is_finite());
    }
    let bad = common::specdef_command(
        &[
            "transformer-finetune",
            "--topics",
            "weather",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--topics must be harmful or utility"));
}
