//! Sentences as the encoder reads them: token ids, positions and the attention mask of a batch
//! padded to one length, as engine-ready values (indices as floats).

use crate::tokenizer::Encoding;

/// `sequences x tokens` token ids, their positions, and the mask (1 on tokens, 0 on padding).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub sequences: usize,
    pub tokens: usize,
    pub ids: Vec<f64>,
    pub positions: Vec<f64>,
    pub mask: Vec<f64>,
}

impl TokenBatch {
    /// Encodings of one length (the tokenizer's padding makes them so). Panics on an empty
    /// batch or lengths that differ: both are the caller's bug.
    pub fn new(encodings: &[Encoding]) -> Self {
        let tokens = encodings.first().expect("a batch has a sentence").ids.len();
        assert!(
            encodings.iter().all(|e| e.ids.len() == tokens),
            "the encodings of a batch must be padded to one length"
        );
        Self {
            sequences: encodings.len(),
            tokens,
            ids: encodings
                .iter()
                .flat_map(|e| e.ids.iter().map(|&i| f64::from(i)))
                .collect(),
            positions: (0..encodings.len())
                .flat_map(|_| (0..tokens).map(|t| t as f64))
                .collect(),
            mask: encodings
                .iter()
                .flat_map(|e| e.attention_mask.iter().map(|&m| f64::from(m)))
                .collect(),
        }
    }

    /// Each sequence's mean-pooling weights: its mask over its count of tokens.
    pub fn pooling_weights(&self) -> Vec<f64> {
        self.mask
            .chunks(self.tokens)
            .flat_map(|row| {
                let count: f64 = row.iter().sum();
                row.iter()
                    .map(move |m| if count > 0.0 { m / count } else { 0.0 })
            })
            .collect()
    }
}
