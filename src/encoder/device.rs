//! The encoder's parameters on an engine, and its forward pass recorded there.

use super::host::{EncoderHost, NormParams};
use super::{EncoderConfig, TokenBatch};
use crate::engine::{
    Activation, Allocation, BatchShape, BatchedLayout, BatchedMatmul, BinaryOp, Engine,
    EngineError, Recording, Tensor,
};
use crate::model::{LayerNorm, LayerOf, Matrix};

/// The encoder's parameters on an engine: each linear map as a layer chain of tensors.
pub struct DeviceEncoder {
    pub config: EncoderConfig,
    pub word_embeddings: Tensor,
    pub position_embeddings: Tensor,
    pub token_type_embeddings: Tensor,
    /// Scale and shift of each layer norm.
    pub embedding_norm: [Tensor; 2],
    /// As [`EncoderHost::linear`]: map `j` of block `b` is `linear[6 b + j]`.
    pub linear: Vec<LayerOf<Tensor>>,
    /// Per block: the norm after attention, then the one after the feed-forward map.
    pub norms: Vec<[[Tensor; 2]; 2]>,
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
    pub fn upload(engine: &mut dyn Engine, host: &EncoderHost) -> Result<Self, EngineError> {
        let mut owner = Allocation::new(engine);
        let mut matrix =
            |name: &str, m: &Matrix| owner.tensor_from(engine, name, m.rows, m.cols, &m.values);
        let word_embeddings = matrix("embeddings.word_embeddings.weight", &host.word_embeddings)?;
        let position_embeddings = matrix(
            "embeddings.position_embeddings.weight",
            &host.position_embeddings,
        )?;
        let token_type_embeddings = matrix(
            "embeddings.token_type_embeddings.weight",
            &host.token_type_embeddings,
        )?;
        let mut norm = |name: &str, n: &NormParams| -> Result<[Tensor; 2], EngineError> {
            Ok([
                matrix(&format!("{name}.weight"), &n.gamma)?,
                matrix(&format!("{name}.bias"), &n.beta)?,
            ])
        };
        let embedding_norm = norm("embeddings.LayerNorm", &host.embedding_norm)?;
        let mut norms = Vec::new();
        for [after_attention, after_feed_forward] in &host.norms {
            norms.push([
                norm("attention.output.LayerNorm", after_attention)?,
                norm("output.LayerNorm", after_feed_forward)?,
            ]);
        }
        let mut linear = Vec::new();
        for (i, layer) in host.linear.iter().enumerate() {
            let name = EncoderHost::linear_name(i);
            linear.push(layer.try_map(i, &mut |key, m| matrix(&format!("{name}.{key}"), m))?);
        }
        Ok(Self {
            config: host.config.clone(),
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embedding_norm,
            linear,
            norms,
            _owner: owner,
        })
    }

    /// The parameters as they stand on the engine (after training), on the host.
    pub fn download(&self, engine: &mut dyn Engine) -> Result<EncoderHost, EngineError> {
        let mut matrix = |t: Tensor| -> Result<Matrix, EngineError> {
            Ok(Matrix::new(t.rows(), t.cols(), engine.read_one(t)?))
        };
        let mut norm = |[gamma, beta]: [Tensor; 2]| -> Result<NormParams, EngineError> {
            Ok(NormParams {
                gamma: matrix(gamma)?,
                beta: matrix(beta)?,
            })
        };
        let embedding_norm = norm(self.embedding_norm)?;
        let norms = (self.norms.iter())
            .map(|[a, b]| Ok([norm(*a)?, norm(*b)?]))
            .collect::<Result<_, EngineError>>()?;
        let mut matrix = |t: &Tensor| -> Result<Matrix, EngineError> {
            Ok(Matrix::new(t.rows(), t.cols(), engine.read_one(*t)?))
        };
        let linear = (self.linear.iter().enumerate())
            .map(|(i, layer)| layer.try_map(i, &mut |_, t| matrix(t)))
            .collect::<Result<_, _>>()?;
        Ok(EncoderHost {
            config: self.config.clone(),
            word_embeddings: matrix(&self.word_embeddings)?,
            position_embeddings: matrix(&self.position_embeddings)?,
            token_type_embeddings: matrix(&self.token_type_embeddings)?,
            embedding_norm,
            linear,
            norms,
        })
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

/// A linear map's chain of factors (each `out x in`, applied input side first, with its LoRA
/// branch where it has one), then its bias: the MLP's layer walk without activation. Its
/// intermediates go to `owner`.
pub(crate) fn record_layer_chain(
    engine: &mut dyn Engine,
    rec: &mut Recording,
    owner: &mut Allocation,
    layer: &LayerOf<Tensor>,
    x: Tensor,
) -> Result<Tensor, EngineError> {
    let rows = x.rows();
    let mut input = x;
    for factor in &layer.factors {
        let out = owner.alloc(engine, "encoder.linear", rows, factor.matrix.rows())?;
        rec.matmul(input, factor.matrix, out, false, true)?;
        if let Some(lora) = &factor.lora {
            let mid = owner.alloc(engine, "encoder.lora", rows, lora.a.rows())?;
            rec.matmul(input, lora.a, mid, false, true)?;
            rec.matmul_scaled(mid, lora.b, out, false, true, lora.scale, 1.0)?;
        }
        input = out;
    }
    let ones = owner.tensor_from(engine, "encoder.ones", rows, 1, &vec![1.0; rows])?;
    rec.matmul_scaled(ones, layer.bias, input, false, false, 1.0, 1.0)?;
    Ok(input)
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
        let encoder = self.encoder;
        let ids = self.values("encoder.ids", rows, 1, &batch.ids)?;
        let positions = self.values("encoder.positions", rows, 1, &batch.positions)?;
        let types = self.values("encoder.types", rows, 1, &vec![0.0; rows])?;
        let mut sum = None;
        for (table, index) in [
            (encoder.word_embeddings, ids),
            (encoder.position_embeddings, positions),
            (encoder.token_type_embeddings, types),
        ] {
            let gathered = self.alloc("encoder.embedding", rows, width)?;
            self.rec.gather_rows(table, index, gathered)?;
            sum = Some(match sum {
                None => gathered,
                Some(partial) => {
                    let total = self.alloc("encoder.embedding_sum", rows, width)?;
                    self.rec.binary(BinaryOp::Add, partial, gathered, total)?;
                    total
                }
            });
        }
        self.layer_norm(encoder.embedding_norm, sum.expect("three tables"))
    }

    fn linear(&mut self, index: usize, x: Tensor) -> Result<Tensor, EngineError> {
        record_layer_chain(
            self.engine,
            self.rec,
            &mut self.owner,
            &self.encoder.linear[index],
            x,
        )
    }

    fn layer_norm(&mut self, [gamma, beta]: [Tensor; 2], x: Tensor) -> Result<Tensor, EngineError> {
        let eps = self.encoder.config.layer_norm_eps;
        let norm = LayerNorm::alloc(self.engine, x.rows(), x.cols(), eps)?;
        let y = self.alloc("encoder.layer_norm", x.rows(), x.cols())?;
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
    /// input and normalised (BERT's post-norm order). Its linear maps are
    /// `linear[6 block..6 block + 6]` in [`super::host::BLOCK_LINEAR_MAPS`] order.
    fn block(&mut self, block: usize, x: Tensor) -> Result<Tensor, EngineError> {
        let map = |j: usize| 6 * block + j;
        let [after_attention, after_feed_forward] = self.encoder.norms[block];
        let (q, k, v) = (
            self.linear(map(0), x)?,
            self.linear(map(1), x)?,
            self.linear(map(2), x)?,
        );
        let context = self.attention(q, k, v)?;
        let attended = self.linear(map(3), context)?;
        let sum = self.residual(x, attended)?;
        let x = self.layer_norm(after_attention, sum)?;
        let expanded = self.linear(map(4), x)?;
        let activated = self.alloc("encoder.gelu", expanded.rows(), expanded.cols())?;
        self.rec
            .activate(Activation::GeluErf, expanded, activated)?;
        let projected = self.linear(map(5), activated)?;
        let sum = self.residual(x, projected)?;
        self.layer_norm(after_feed_forward, sum)
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
