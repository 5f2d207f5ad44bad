//! The encoder's weights on an engine, and its forward pass recorded there.

use super::{EncoderConfig, EncoderWeights, TokenBatch};
use crate::engine::{
    Activation, Allocation, BatchShape, BatchedLayout, BatchedMatmul, BinaryOp, Engine,
    EngineError, Recording, Tensor,
};
use crate::model::LayerNorm;
use std::collections::HashMap;

/// The weights on an engine, by their published names (vectors as `1 x n` rows).
pub struct DeviceEncoder {
    pub config: EncoderConfig,
    tensors: HashMap<String, Tensor>,
    _owner: Allocation,
}

/// One recorded forward pass: its outputs, and the intermediates it owns (freed on drop).
pub struct EncoderRun {
    /// `sequences x hidden`: each sequence's mean over its tokens of the last hidden state.
    pub pooled: Tensor,
    /// `(sequences tokens) x hidden`: the last hidden state.
    pub hidden: Tensor,
    /// `(sequences tokens) x hidden`: the embeddings' output (after their layer norm).
    pub embedded: Tensor,
    _owner: Allocation,
    _norms: Vec<LayerNorm>,
}

impl DeviceEncoder {
    pub fn upload(
        engine: &mut dyn Engine,
        config: &EncoderConfig,
        weights: &EncoderWeights,
    ) -> Result<Self, EngineError> {
        let mut owner = Allocation::new(engine);
        let mut tensors = HashMap::new();
        for (name, _) in super::weights::expected_tensors(config) {
            let (shape, values) = weights.get(&name);
            let (rows, cols) = match *shape {
                [rows, cols] => (rows, cols),
                [len] => (1, len),
                _ => unreachable!("the encoder's tensors are vectors and matrices"),
            };
            let values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            let tensor = owner.tensor_from(engine, &name, rows, cols, &values)?;
            tensors.insert(name, tensor);
        }
        Ok(Self {
            config: config.clone(),
            tensors,
            _owner: owner,
        })
    }

    /// The weight of a published name.
    pub fn tensor(&self, name: &str) -> Tensor {
        self.tensors[name]
    }

    /// Records the forward pass over `batch` into `rec`.
    pub fn record(
        &self,
        engine: &mut dyn Engine,
        rec: &mut Recording,
        batch: &TokenBatch,
    ) -> Result<EncoderRun, EngineError> {
        let config = &self.config;
        if batch.tokens > config.max_position_embeddings {
            return Err(EngineError::Shape {
                op: "encoder",
                message: format!(
                    "{} tokens per sequence, the encoder has {} positions",
                    batch.tokens, config.max_position_embeddings
                ),
            });
        }
        let owner = Allocation::new(&*engine);
        let forward = Forward {
            engine,
            rec,
            encoder: self,
            owner,
            norms: Vec::new(),
            batch,
        };
        forward.run()
    }
}

/// The forward pass being recorded: the intermediates it allocates, in order.
struct Forward<'a> {
    engine: &'a mut dyn Engine,
    rec: &'a mut Recording,
    encoder: &'a DeviceEncoder,
    owner: Allocation,
    norms: Vec<LayerNorm>,
    batch: &'a TokenBatch,
}

impl Forward<'_> {
    fn rows(&self) -> usize {
        self.batch.sequences * self.batch.tokens
    }

    fn alloc(&mut self, label: &str, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        self.owner.alloc(self.engine, label, rows, cols)
    }

    fn values(
        &mut self,
        label: &str,
        rows: usize,
        cols: usize,
        values: &[f64],
    ) -> Result<Tensor, EngineError> {
        self.owner
            .tensor_from(self.engine, label, rows, cols, values)
    }

    fn run(mut self) -> Result<EncoderRun, EngineError> {
        let embedded = self.embeddings()?;
        let mut hidden = embedded;
        for layer in 0..self.encoder.config.num_hidden_layers {
            hidden = self.block(layer, hidden)?;
        }
        let pooled = self.mean_pool(hidden)?;
        Ok(EncoderRun {
            pooled,
            hidden,
            embedded,
            _owner: self.owner,
            _norms: self.norms,
        })
    }

    /// Word, position and token-type embeddings (every token of type 0: one sentence per
    /// sequence), summed and normalised.
    fn embeddings(&mut self) -> Result<Tensor, EngineError> {
        let (rows, width) = (self.rows(), self.encoder.config.hidden_size);
        let batch = self.batch;
        let ids = self.values("encoder.ids", rows, 1, &batch.ids)?;
        let positions = self.values("encoder.positions", rows, 1, &batch.positions)?;
        let types = self.values("encoder.types", rows, 1, &vec![0.0; rows])?;
        let mut sum = None;
        for (table, index) in [
            ("embeddings.word_embeddings.weight", ids),
            ("embeddings.position_embeddings.weight", positions),
            ("embeddings.token_type_embeddings.weight", types),
        ] {
            let gathered = self.alloc("encoder.embedding", rows, width)?;
            self.rec
                .gather_rows(self.encoder.tensor(table), index, gathered)?;
            sum = Some(match sum {
                None => gathered,
                Some(partial) => {
                    let total = self.alloc("encoder.embedding_sum", rows, width)?;
                    self.rec.binary(BinaryOp::Add, partial, gathered, total)?;
                    total
                }
            });
        }
        self.layer_norm("embeddings.LayerNorm", sum.expect("three tables"))
    }

    /// `x W^T + b` for the published linear map `name` (PyTorch stores W as out x in).
    fn linear(&mut self, name: &str, x: Tensor) -> Result<Tensor, EngineError> {
        let weight = self.encoder.tensor(&format!("{name}.weight"));
        let bias = self.encoder.tensor(&format!("{name}.bias"));
        let out = self.alloc(name, x.rows(), weight.rows())?;
        let ones = self.values("encoder.ones", x.rows(), 1, &vec![1.0; x.rows()])?;
        self.rec.matmul(x, weight, out, false, true)?;
        self.rec
            .matmul_scaled(ones, bias, out, false, false, 1.0, 1.0)?;
        Ok(out)
    }

    fn layer_norm(&mut self, name: &str, x: Tensor) -> Result<Tensor, EngineError> {
        let eps = self.encoder.config.layer_norm_eps;
        let norm = LayerNorm::alloc(self.engine, x.rows(), x.cols(), eps)?;
        let y = self.alloc(name, x.rows(), x.cols())?;
        let gamma = self.encoder.tensor(&format!("{name}.weight"));
        let beta = self.encoder.tensor(&format!("{name}.bias"));
        norm.record(self.rec, x, gamma, beta, y)?;
        self.norms.push(norm);
        Ok(y)
    }

    fn residual(&mut self, x: Tensor, update: Tensor) -> Result<Tensor, EngineError> {
        let sum = self.alloc("encoder.residual", x.rows(), x.cols())?;
        self.rec.binary(BinaryOp::Add, x, update, sum)?;
        Ok(sum)
    }

    /// One block: multi-head self-attention, then the feed-forward map, each added to its
    /// input and normalised (BERT's post-norm order).
    fn block(&mut self, layer: usize, x: Tensor) -> Result<Tensor, EngineError> {
        let p = format!("encoder.layer.{layer}.");
        let [q, k, v] = ["query", "key", "value"].map(|m| format!("{p}attention.self.{m}"));
        let (q, k, v) = (
            self.linear(&q, x)?,
            self.linear(&k, x)?,
            self.linear(&v, x)?,
        );
        let context = self.attention(q, k, v)?;
        let attended = self.linear(&format!("{p}attention.output.dense"), context)?;
        let sum = self.residual(x, attended)?;
        let x = self.layer_norm(&format!("{p}attention.output.LayerNorm"), sum)?;
        let expanded = self.linear(&format!("{p}intermediate.dense"), x)?;
        let activated = self.alloc("encoder.gelu", expanded.rows(), expanded.cols())?;
        self.rec
            .activate(Activation::GeluErf, expanded, activated)?;
        let projected = self.linear(&format!("{p}output.dense"), activated)?;
        let sum = self.residual(x, projected)?;
        self.layer_norm(&format!("{p}output.LayerNorm"), sum)
    }

    /// `softmax(Q_h K_h^T / sqrt(d_h) + mask) V_h` per sequence and head, the heads being
    /// column blocks of q, k and v, written into the same blocks of the context.
    fn attention(&mut self, q: Tensor, k: Tensor, v: Tensor) -> Result<Tensor, EngineError> {
        let config = &self.encoder.config;
        let (heads, head_width, hidden) = (
            config.num_attention_heads,
            config.head_width(),
            config.hidden_size,
        );
        let (sequences, tokens) = (self.batch.sequences, self.batch.tokens);
        let head_blocks = BatchedLayout {
            outer: tokens * hidden,
            inner: head_width,
            leading: hidden,
        };
        let score_blocks = BatchedLayout {
            outer: heads * tokens * tokens,
            inner: tokens * tokens,
            leading: tokens,
        };
        let per_head = |m, n, k| BatchShape {
            outer: sequences,
            inner: heads,
            m,
            n,
            k,
        };
        let score_rows = sequences * heads * tokens;
        let scores = self.alloc("encoder.scores", score_rows, tokens)?;
        let probabilities = self.alloc("encoder.probabilities", score_rows, tokens)?;
        let context = self.alloc("encoder.context", self.rows(), hidden)?;
        let mask = self.values("encoder.mask", sequences, tokens, &self.batch.mask.clone())?;
        self.rec.batched_matmul(BatchedMatmul {
            a: q,
            b: k,
            c: scores,
            shape: per_head(tokens, tokens, head_width),
            a_layout: head_blocks,
            b_layout: head_blocks,
            c_layout: score_blocks,
            trans_a: false,
            trans_b: true,
            alpha: 1.0 / (head_width as f64).sqrt(),
            beta: 0.0,
        })?;
        self.rec
            .masked_softmax(scores, mask, probabilities, heads * tokens)?;
        self.rec.batched_matmul(BatchedMatmul {
            a: probabilities,
            b: v,
            c: context,
            shape: per_head(tokens, head_width, tokens),
            a_layout: score_blocks,
            b_layout: head_blocks,
            c_layout: head_blocks,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        })?;
        Ok(context)
    }

    /// Each sequence's mean over its tokens (not its padding): a `1 x tokens` product per
    /// sequence with the mask over its count.
    fn mean_pool(&mut self, hidden: Tensor) -> Result<Tensor, EngineError> {
        let (sequences, tokens) = (self.batch.sequences, self.batch.tokens);
        let width = hidden.cols();
        let weights = self.batch.pooling_weights();
        let weights = self.values("encoder.pooling_weights", sequences, tokens, &weights)?;
        let pooled = self.alloc("encoder.pooled", sequences, width)?;
        let one_matrix_each = |outer, leading| BatchedLayout {
            outer,
            inner: 0,
            leading,
        };
        self.rec.batched_matmul(BatchedMatmul {
            a: weights,
            b: hidden,
            c: pooled,
            shape: BatchShape {
                outer: sequences,
                inner: 1,
                m: 1,
                n: width,
                k: tokens,
            },
            a_layout: one_matrix_each(tokens, tokens),
            b_layout: one_matrix_each(tokens * width, width),
            c_layout: one_matrix_each(width, width),
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        })?;
        Ok(pooled)
    }
}
