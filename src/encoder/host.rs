//! The encoder's parameters on the host, in f64: every linear map (Q, K, V, the attention's
//! output, the feed-forward maps) as a layer chain like an MLP's layers, so the defences and
//! adaptive attacks that transform layers (SpecDef, factorisation, injection, LoRA) apply to
//! them with no code of their own; embeddings and layer norms as matrices beside them.

use super::{EncoderConfig, EncoderWeights};
use crate::model::{FactorOf, FactorRole, HostLayer, Matrix};

/// The linear maps of one block, in registry order, by their published names.
pub const BLOCK_LINEAR_MAPS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// A layer norm's scale and shift (`1 x width` each).
#[derive(Clone, Debug, PartialEq)]
pub struct NormParams {
    pub gamma: Matrix,
    pub beta: Matrix,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EncoderHost {
    pub config: EncoderConfig,
    pub word_embeddings: Matrix,
    pub position_embeddings: Matrix,
    pub token_type_embeddings: Matrix,
    pub embedding_norm: NormParams,
    /// Every block's linear maps, block by block in [`BLOCK_LINEAR_MAPS`] order: map `j` of
    /// block `b` is `linear[6 b + j]`. One flat list, so a layer selection (SpecDef's
    /// `layers = [..]`) indexes it as it indexes an MLP's layers.
    pub linear: Vec<HostLayer>,
    /// Per block: the norm after attention, then the one after the feed-forward map.
    pub norms: Vec<[NormParams; 2]>,
}

impl EncoderHost {
    pub fn from_weights(config: &EncoderConfig, weights: &EncoderWeights) -> Self {
        let matrix = |name: &str| {
            let (shape, values) = weights.get(name);
            let (rows, cols) = match *shape {
                [rows, cols] => (rows, cols),
                [len] => (1, len),
                _ => unreachable!("the encoder's tensors are vectors and matrices"),
            };
            Matrix::new(rows, cols, values.iter().map(|&v| f64::from(v)).collect())
        };
        let norm = |name: &str| NormParams {
            gamma: matrix(&format!("{name}.weight")),
            beta: matrix(&format!("{name}.bias")),
        };
        let mut linear = Vec::new();
        let mut norms = Vec::new();
        for block in 0..config.num_hidden_layers {
            let prefix = format!("encoder.layer.{block}.");
            for map in BLOCK_LINEAR_MAPS {
                let name = format!("{prefix}{map}");
                linear.push(HostLayer {
                    factors: vec![FactorOf::plain(
                        FactorRole::Weight,
                        matrix(&format!("{name}.weight")),
                    )],
                    bias: matrix(&format!("{name}.bias")),
                });
            }
            norms.push([
                norm(&format!("{prefix}attention.output.LayerNorm")),
                norm(&format!("{prefix}output.LayerNorm")),
            ]);
        }
        Self {
            config: config.clone(),
            word_embeddings: matrix("embeddings.word_embeddings.weight"),
            position_embeddings: matrix("embeddings.position_embeddings.weight"),
            token_type_embeddings: matrix("embeddings.token_type_embeddings.weight"),
            embedding_norm: norm("embeddings.LayerNorm"),
            linear,
            norms,
        }
    }

    /// Every parameter: embeddings, norms and the linear maps' chains (SpecDef's
    /// compensation and a rewrite's factors included).
    pub fn parameter_count(&self) -> usize {
        let norm = |n: &NormParams| n.gamma.values.len() + n.beta.values.len();
        [
            &self.word_embeddings,
            &self.position_embeddings,
            &self.token_type_embeddings,
        ]
        .iter()
        .map(|m| m.values.len())
        .sum::<usize>()
            + norm(&self.embedding_norm)
            + self.norms.iter().flatten().map(norm).sum::<usize>()
            + self
                .linear
                .iter()
                .map(HostLayer::parameter_count)
                .sum::<usize>()
    }

    /// Every tensor under its published name, the inverse of [`Self::from_weights`]. Refused
    /// (naming the map) where a linear map is not one plain weight: a defended or rewritten
    /// encoder has no published form.
    pub fn named_tensors(&self) -> Result<Vec<(String, &Matrix)>, String> {
        let mut named = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                &self.word_embeddings,
            ),
            (
                "embeddings.position_embeddings.weight".to_string(),
                &self.position_embeddings,
            ),
            (
                "embeddings.token_type_embeddings.weight".to_string(),
                &self.token_type_embeddings,
            ),
        ];
        fn push_norm<'a>(named: &mut Vec<(String, &'a Matrix)>, name: &str, norm: &'a NormParams) {
            named.push((format!("{name}.weight"), &norm.gamma));
            named.push((format!("{name}.bias"), &norm.beta));
        }
        push_norm(&mut named, "embeddings.LayerNorm", &self.embedding_norm);
        for (index, layer) in self.linear.iter().enumerate() {
            let name = Self::linear_name(index);
            match layer.factors.as_slice() {
                [factor] if factor.role == FactorRole::Weight && factor.lora.is_none() => {
                    named.push((format!("{name}.weight"), &factor.matrix));
                }
                _ => {
                    return Err(format!(
                        "{name} is not one plain weight (a defended or rewritten map)"
                    ));
                }
            }
            named.push((format!("{name}.bias"), &layer.bias));
        }
        for (block, [attention, output]) in self.norms.iter().enumerate() {
            let prefix = format!("encoder.layer.{block}.");
            push_norm(
                &mut named,
                &format!("{prefix}attention.output.LayerNorm"),
                attention,
            );
            push_norm(&mut named, &format!("{prefix}output.LayerNorm"), output);
        }
        Ok(named)
    }

    /// The published name of linear map `index` of [`Self::linear`].
    pub fn linear_name(index: usize) -> String {
        format!(
            "encoder.layer.{}.{}",
            index / BLOCK_LINEAR_MAPS.len(),
            BLOCK_LINEAR_MAPS[index % BLOCK_LINEAR_MAPS.len()]
        )
    }
}
