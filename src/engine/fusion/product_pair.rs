//! Two independent products side by side: where two consecutive steps of a plan are products
//! (a recorded matmul with beta = 0, or a layer's fused weight or input gradient) and neither
//! reads or writes what the other writes, one dispatch computes both (the kernel written by
//! src/engine/gpu/product_pair.rs). A backward pass is full of such pairs: a layer's weight
//! gradient and the gradient it passes down both read the output gradient and nothing of each
//! other. Each value is computed as the unpaired kernel computes it, so pairing changes no result.

use super::{Fused, Step, independent};
use crate::engine::gpu::kernels::{Kernel, Module};
use crate::engine::gpu::lower::{Dispatch, Operand, grid_1d, words};
use crate::engine::gpu::product_pair::{ProductKind, ProductParams};
use crate::engine::op::Matmul;
use crate::engine::{EngineError, Op, Tensor};

/// Two independent products in one dispatch: its module is written per pair of kinds, their
/// transpositions and activations are its constants.
pub(crate) fn kernel(first: ProductKind, second: ProductKind) -> Kernel {
    let constants = first.constants(0).into_iter().chain(second.constants(1));
    constants.fold(
        Kernel::new(Module::ProductPair(first, second), "product_pair"),
        |kernel, (name, value)| kernel.with(name, value),
    )
}

/// One product as a pair holds it: its shape, scalars and buffers in binding order.
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    pub(super) kind: ProductKind,
    /// The result's rows and columns (columns including a weight gradient's bias column), the
    /// terms of each sum, and B's columns as stored.
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) b_cols: usize,
    pub(super) alpha: f64,
    pub(super) outputs: Vec<Tensor>,
    pub(super) inputs: Vec<Tensor>,
}

impl Product {
    /// The product a plan step computes, if it is one a pair can hold.
    fn of(step: &Step) -> Option<Product> {
        match step {
            &Step::Op(&Op::Matmul(Matmul {
                a,
                b,
                c,
                trans_a,
                trans_b,
                alpha,
                beta: 0.0,
            })) => Some(Product {
                kind: ProductKind::Matmul { trans_a, trans_b },
                m: c.rows(),
                n: c.cols(),
                k: if trans_a { a.rows() } else { a.cols() },
                b_cols: c.cols(),
                alpha,
                outputs: vec![c],
                inputs: vec![a, b],
            }),
            Step::Fused(Fused::LinearWeightGrad(f)) => Some(f.product()),
            Step::Fused(Fused::LinearInputGrad(f)) => Some(f.product()),
            _ => None,
        }
    }

    /// 2 m n k.
    fn flop(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }

    fn tiles(&self) -> (usize, usize) {
        (self.m.div_ceil(64), self.n.div_ceil(64))
    }

    fn params(&self) -> ProductParams {
        let (tiles_m, tiles_n) = self.tiles();
        ProductParams {
            m: self.m as u32,
            n: self.n as u32,
            k: self.k as u32,
            b_cols: self.b_cols as u32,
            alpha: self.alpha as f32,
            tiles_n: tiles_n as u32,
            tiles: (tiles_m * tiles_n) as u32,
            _pad: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProductPair {
    first: Product,
    second: Product,
}

impl ProductPair {
    /// The two products as one dispatch, where they are independent and their buffers fit the
    /// device's `max_storage_buffers` per stage.
    fn of(first: Product, second: Product, max_storage_buffers: u32) -> Option<Self> {
        let outputs = [&first.outputs[..], &second.outputs[..]].concat();
        let inputs = [&first.inputs[..], &second.inputs[..]].concat();
        let fits = outputs.len() + inputs.len() <= max_storage_buffers as usize;
        (fits && independent(&outputs, &inputs)).then_some(Self { first, second })
    }

    pub fn kinds(&self) -> (ProductKind, ProductKind) {
        (self.first.kind, self.second.kind)
    }

    pub(super) fn lower(&self, max_per_dim: u32) -> Result<Dispatch, EngineError> {
        let (first, second) = (self.first.params(), self.second.params());
        let operands = [
            &self.first.outputs,
            &self.second.outputs,
            &self.first.inputs,
            &self.second.inputs,
        ]
        .into_iter()
        .flatten()
        .map(|&t| Operand::Tensor(t))
        .collect();
        let kernel = kernel(self.first.kind, self.second.kind);
        Ok(Dispatch {
            flop: self.first.flop() + self.second.flop(),
            kernel,
            params: words([first, second]),
            operands,
            workgroups: grid_1d(
                kernel.entry_point(),
                (first.tiles + second.tiles) as usize,
                max_per_dim,
            )?,
        })
    }
}

/// The plan's steps with each run of two independent products made one pair, left to right.
pub(super) fn pair_products(steps: Vec<Step<'_>>, max_storage_buffers: u32) -> Vec<Step<'_>> {
    let mut paired = Vec::with_capacity(steps.len());
    let mut steps = steps.into_iter().peekable();
    while let Some(step) = steps.next() {
        let pair = Product::of(&step).and_then(|first| {
            let second = Product::of(steps.peek()?)?;
            ProductPair::of(first, second, max_storage_buffers)
        });
        match pair {
            Some(pair) => {
                steps.next();
                paired.push(Step::Fused(Fused::ProductPair(pair)));
            }
            None => paired.push(step),
        }
    }
    paired
}
