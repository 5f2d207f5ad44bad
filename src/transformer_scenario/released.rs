//! The released classifier as a file: the transformer scenario's model after release and
//! suppression, before any defence, with what it measured and the scenario that made it.
//! safetensors in F32 (the precision the encoder is published and trained in): the encoder under
//! its published names, so `EncoderWeights` reads it as it reads the pretrained file, and the
//! head as `head.weight` (`classes x hidden`) and `head.bias`. The browser demo starts from one
//! (`specdef release-transformer` writes it) instead of fine-tuning on a software GPU.

use super::classifier::HostClassifier;
use super::topics::topic_names;
use super::{TransformerError, TransformerScenario};
use crate::encoder::{EncoderConfig, EncoderHost, EncoderWeights, expected_tensors};
use crate::model::{FactorOf, FactorRole, HostLayer, Matrix};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The header's `specdef.format` of this layout.
pub const RELEASED_FORMAT: &str = "specdef-released-classifier/1";

/// What the released model measured on the scenario's held-out samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleasedMeasures {
    pub harmful_accuracy: f64,
    pub harmful_accuracy_before_suppression: f64,
    pub utility_accuracy: f64,
    pub utility_loss: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReleasedClassifier {
    pub classifier: HostClassifier,
    /// The scenario whose release and suppression made it (its encoder settings say how many
    /// blocks and tokens; its defence and attack settings are the demo's defaults).
    pub scenario: TransformerScenario,
    pub measured: ReleasedMeasures,
}

fn invalid(message: impl Into<String>) -> TransformerError {
    TransformerError::Setting(format!("released classifier: {}", message.into()))
}

fn json(value: &impl Serialize) -> Result<String, TransformerError> {
    serde_json::to_string(value).map_err(|e| invalid(e.to_string()))
}

/// A header field's JSON as `T`.
fn from_json<T: serde::de::DeserializeOwned>(key: &str, text: &str) -> Result<T, TransformerError> {
    serde_json::from_str(text).map_err(|e| invalid(format!("{key}: {e}")))
}

fn f32_bytes(values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect()
}

impl ReleasedClassifier {
    /// Refuses a released model that `scenario`'s own release would not have made (another
    /// seed, encoder size, data sample or release or suppression setting), naming what differs.
    pub fn check_made_by(&self, scenario: &TransformerScenario) -> Result<(), TransformerError> {
        let made = &self.scenario;
        let differs = [
            ("seed", made.seed != scenario.seed),
            ("[encoder]", made.encoder != scenario.encoder),
            ("[release]", made.release != scenario.release),
            ("[suppression]", made.suppression != scenario.suppression),
        ];
        let differing: Vec<&str> = (differs.iter())
            .filter(|(_, differs)| *differs)
            .map(|(what, _)| *what)
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        Err(invalid(format!(
            "made by scenario {:?}, whose {} differ from {:?}'s: release it again for this scenario",
            made.name,
            differing.join(", "),
            scenario.name
        )))
    }

    /// The file's bytes. Refused where the encoder is defended or rewritten (it has no
    /// published form) or a tensor's size disagrees with the configuration.
    pub fn encode(&self) -> Result<Vec<u8>, TransformerError> {
        let encoder = &self.classifier.encoder;
        let config = &encoder.config;
        let mut shapes: HashMap<String, Vec<usize>> =
            expected_tensors(config).into_iter().collect();
        let classes = topic_names().len();
        shapes.insert("head.weight".into(), vec![classes, config.hidden_size]);
        shapes.insert("head.bias".into(), vec![classes]);
        let mut named = encoder.named_tensors().map_err(invalid)?;
        let head = &self.classifier.head;
        match head.factors.as_slice() {
            [factor] if factor.role == FactorRole::Weight && factor.lora.is_none() => {
                named.push(("head.weight".into(), &factor.matrix));
            }
            _ => return Err(invalid("the head is not one plain weight")),
        }
        named.push(("head.bias".into(), &head.bias));
        let mut stored = Vec::with_capacity(named.len());
        for (name, matrix) in named {
            let shape = shapes
                .remove(&name)
                .ok_or_else(|| invalid(format!("no place for tensor {name}")))?;
            if shape.iter().product::<usize>() != matrix.values.len() {
                return Err(invalid(format!(
                    "{name} holds {} values, its shape {shape:?} needs {}",
                    matrix.values.len(),
                    shape.iter().product::<usize>()
                )));
            }
            stored.push((name, shape, f32_bytes(&matrix.values)));
        }
        if let Some(missing) = shapes.keys().next() {
            return Err(invalid(format!("tensor {missing} is missing")));
        }
        let views = (stored.iter())
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.as_str(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let metadata = [
            ("specdef.format", RELEASED_FORMAT.to_string()),
            ("encoder.config", json(config)?),
            ("scenario", json(&self.scenario)?),
            ("measured", json(&self.measured)?),
            ("topics", json(&topic_names())?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| invalid(e.to_string()))
    }

    /// Reads a file's bytes, checking the format, every tensor's type and shape against the
    /// stored configuration, and that every value is finite.
    pub fn decode(bytes: &[u8]) -> Result<Self, TransformerError> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| invalid(format!("not a safetensors file ({e})")))?;
        let metadata = header
            .metadata()
            .as_ref()
            .ok_or_else(|| invalid("no specdef metadata in the header"))?;
        let field = |key: &str| {
            metadata
                .get(key)
                .ok_or_else(|| invalid(format!("the header lacks {key:?}")))
        };
        let format = field("specdef.format")?;
        if format != RELEASED_FORMAT {
            return Err(invalid(format!(
                "format {format:?}, this build reads {RELEASED_FORMAT:?}"
            )));
        }
        let config = EncoderConfig::from_json(field("encoder.config")?)
            .map_err(|e| invalid(e.to_string()))?;
        let scenario: TransformerScenario = from_json("scenario", field("scenario")?)?;
        scenario.validate().map_err(invalid)?;
        let measured: ReleasedMeasures = from_json("measured", field("measured")?)?;
        let topics: Vec<String> = from_json("topics", field("topics")?)?;
        if topics != topic_names() {
            return Err(invalid(format!(
                "its head classifies {topics:?}, this build's task is {:?}",
                topic_names()
            )));
        }
        if config.num_hidden_layers != scenario.encoder.blocks {
            return Err(invalid(format!(
                "the encoder has {} blocks, its scenario keeps {}",
                config.num_hidden_layers, scenario.encoder.blocks
            )));
        }
        let weights = EncoderWeights::from_bytes(bytes, &config)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
        let classes = topic_names().len();
        let head_tensor = |name: &str, shape: &[usize]| {
            let view = tensors
                .tensor(name)
                .map_err(|_| invalid(format!("no tensor {name:?}")))?;
            if view.dtype() != Dtype::F32 || view.shape() != shape {
                return Err(invalid(format!(
                    "{name} is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            let values: Vec<f64> = (view.data().chunks_exact(4))
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect();
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(invalid(format!("{name}[{i}] is not finite")));
            }
            let rows = if shape.len() == 2 { shape[0] } else { 1 };
            Ok(Matrix::new(rows, values.len() / rows, values))
        };
        let head = HostLayer {
            factors: vec![FactorOf::plain(
                FactorRole::Weight,
                head_tensor("head.weight", &[classes, config.hidden_size])?,
            )],
            bias: head_tensor("head.bias", &[classes])?,
        };
        Ok(Self {
            classifier: HostClassifier {
                encoder: EncoderHost::from_weights(&config, &weights),
                head,
            },
            scenario,
            measured,
        })
    }
}
