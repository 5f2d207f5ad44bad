//! `specdef embed`: each text's token ids and mean-pooled sentence embedding from the
//! pretrained encoder, as JSON lines, so anyone can check the model against another
//! implementation (sentence-transformers' `encode` is this vector over its L2 norm).

use anyhow::{Context, Result};
use specdef::encoder::{self, DeviceEncoder, EncoderHost, TokenBatch};
use specdef::engine_choice::EngineChoice;
use specdef::tokenizer::WordPiece;
use specdef::transformer_files::{FETCH_HINT, model_dir};
use std::path::Path;

/// One output line: the text, its token ids (with [CLS] and [SEP], no padding), and the mean
/// of the last hidden state over those tokens.
#[derive(serde::Serialize)]
struct Embedded<'a> {
    text: &'a str,
    ids: &'a [u32],
    embedding: Vec<f32>,
}

/// The longest sequence embedded, as the reference's tokenizer.json truncates.
const MAX_TOKENS: usize = 128;

pub fn embed(
    model: Option<&Path>,
    layers: Option<usize>,
    choice: EngineChoice,
    texts: &[String],
) -> Result<()> {
    let folder = model.map(Path::to_path_buf).unwrap_or_else(model_dir);
    if !folder.join("model.safetensors").is_file() {
        anyhow::bail!(
            "{} has no model.safetensors: {FETCH_HINT}",
            folder.display()
        );
    }
    let (config, weights) = encoder::load(&folder, layers)?;
    let tokenizer = WordPiece::from_file(&folder.join("tokenizer.json"))?;
    let unpadded: Vec<_> = texts
        .iter()
        .map(|text| {
            tokenizer
                .encode(text, MAX_TOKENS)
                .map(|e| e.attention_mask.iter().sum::<u32>() as usize)
        })
        .collect::<Result<_, _>>()?;
    let longest = unpadded.iter().copied().max().unwrap_or(2);
    let encodings: Vec<_> = texts
        .iter()
        .map(|t| tokenizer.encode(t, longest))
        .collect::<Result<_, _>>()?;
    let batch = TokenBatch::new(&encodings);
    let mut engine = crate::open(choice)?;
    let device = DeviceEncoder::upload(
        engine.as_mut(),
        &EncoderHost::from_weights(&config, &weights),
    )
    .context("uploading the encoder")?;
    let mut rec = specdef::Recording::new();
    let run = device.record(engine.as_mut(), &mut rec, &batch)?;
    engine.run(&rec).context("running the encoder")?;
    let pooled = engine.read_one(run.pooled)?;
    eprintln!(
        "{} texts through {} of all-MiniLM-L6-v2's blocks ({} parameters) on {}",
        texts.len(),
        config.num_hidden_layers,
        weights.parameter_count(),
        engine.info()
    );
    for ((text, encoding), (embedding, &tokens)) in texts
        .iter()
        .zip(&encodings)
        .zip(pooled.chunks(config.hidden_size).zip(&unpadded))
    {
        let line = Embedded {
            text,
            ids: &encoding.ids[..tokens],
            embedding: embedding.iter().map(|&v| v as f32).collect(),
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}
