//! A linear layer's products with the element-wise work around them, as the model's graph
//! records them (src/model/graph.rs): shaders/linear.wgsl.
//!
//! - forward: `pre = alpha op(x) op(w)`, then the bias as the rank-one update
//!   `pre += ones bias^T` (a product with k = 1), then `post = f(pre)` where there is an
//!   activation. The fused kernel adds the same two terms and applies the same f.
//! - weight gradient: `db = alpha ones^T g` and `dw = alpha g^T h` (g the output gradient, h the
//!   input): one product `[dw | db^T] = alpha g^T [h | ones]`, each bias-gradient sum over the
//!   batch in the weight gradient's order (products commute exactly, so its values are the
//!   unfused product's).
//! - input gradient: `dh = alpha op(g) op(w)`, then `grad_pre = dh * f'(pre)` through the
//!   previous layer's activation.

use super::independent;
use super::product_pair::Product;
use crate::engine::gpu::kernels::{Kernel, ShaderFile, transpositions};
use crate::engine::gpu::lower::{Dispatch, LinearParams, Operand, grid_2d, words};
use crate::engine::gpu::product_pair::ProductKind;
use crate::engine::op::{Activate, ActivateGrad, Matmul};
use crate::engine::{Activation, EngineError, Op, Tensor};

/// shaders/linear.wgsl, whose loads and stores are guarded by the tile's own shape logic.
static LINEAR_WGSL: ShaderFile = crate::shader_file!(
    "linear",
    snippets: ["common/activation.wgsl", "common/matmul_tile.wgsl"],
    self_bounded: true
);

/// The fused forward: product, bias, and the activation where there is one.
fn forward_kernel(trans_b: bool, activation: Option<Activation>) -> Kernel {
    let entry_point = match activation {
        None => "linear_forward",
        Some(_) => "linear_forward_activate",
    };
    let kernel = Kernel::of_file(&LINEAR_WGSL, entry_point)
        .with_flag("TRANS_A", false)
        .with_flag("TRANS_B", trans_b)
        .labelled(
            "linear_forward",
            [
                transpositions(false, trans_b),
                activation.map_or("", Activation::name),
            ],
        );
    match activation {
        Some(f) => kernel.with("ACTIVATION", f.code()),
        None => kernel,
    }
}

/// The fused weight and bias gradients.
fn weight_grad_kernel() -> Kernel {
    Kernel::of_file(&LINEAR_WGSL, "linear_weight_grad")
        .with_flag("TRANS_A", true)
        .with_flag("TRANS_B", false)
}

/// The fused input gradient through the previous layer's activation.
fn input_grad_kernel(trans_b: bool, activation: Activation) -> Kernel {
    Kernel::of_file(&LINEAR_WGSL, "linear_input_grad")
        .with_flag("TRANS_A", false)
        .with_flag("TRANS_B", trans_b)
        .with("ACTIVATION", activation.code())
        .suffixed([transpositions(false, trans_b), activation.name()])
}

/// Every kernel of linear.wgsl.
pub(super) fn kernels() -> Vec<Kernel> {
    let mut kernels = vec![weight_grad_kernel()];
    for trans_b in [false, true] {
        kernels.push(forward_kernel(trans_b, None));
        for f in Activation::ALL {
            kernels.push(forward_kernel(trans_b, Some(f)));
            kernels.push(input_grad_kernel(trans_b, f));
        }
    }
    kernels
}

/// The params and grid of a tiled product with `m x n` results over `k` terms, whose B has
/// `b_cols` columns of its own.
fn product(
    kernel: Kernel,
    (m, n, k, b_cols): (usize, usize, usize, usize),
    alpha: f64,
    operands: Vec<Operand>,
    max_per_dim: u32,
) -> Result<Dispatch, EngineError> {
    Ok(Dispatch {
        flop: 2.0 * (m * n * k) as f64,
        kernel,
        params: words(LinearParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            b_cols: b_cols as u32,
            alpha: alpha as f32,
            _pad: [0; 3],
        }),
        operands,
        workgroups: grid_2d(
            kernel.entry_point(),
            n.div_ceil(64),
            m.div_ceil(64),
            max_per_dim,
        )?,
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct LinearForward {
    x: Tensor,
    w: Tensor,
    trans_b: bool,
    alpha: f64,
    ones: Tensor,
    bias: Tensor,
    pre: Tensor,
    activation: Option<(Activation, Tensor)>,
}

impl LinearForward {
    /// `pre = alpha x op(w)`, `pre += ones bias` (k = 1), and `post = f(pre)` if it follows.
    pub(super) fn at_start_of(ops: &[Op]) -> Option<(Self, usize)> {
        let [
            Op::Matmul(Matmul {
                a: x,
                b: w,
                c: pre,
                trans_a: false,
                trans_b,
                alpha,
                beta: 0.0,
            }),
            Op::Matmul(Matmul {
                a: ones,
                b: bias,
                c: bias_out,
                trans_a: false,
                trans_b: false,
                alpha: 1.0,
                beta: 1.0,
            }),
            ref rest @ ..,
        ] = *ops
        else {
            return None;
        };
        if bias_out != pre || ones.cols() != 1 {
            return None;
        }
        let inputs = [x, w, ones, bias];
        if !independent(&[pre], &inputs) {
            return None;
        }
        // The activation joins unless its output is one of the product's inputs.
        let activation = match rest.first() {
            Some(&Op::Activate(Activate { f, x: input, y })) if input == pre => Some((f, y)),
            _ => None,
        }
        .filter(|&(_, post)| independent(&[pre, post], &inputs));
        let fused = Self {
            x,
            w,
            trans_b,
            alpha,
            ones,
            bias,
            pre,
            activation,
        };
        Some((fused, 2 + usize::from(activation.is_some())))
    }

    pub(super) fn lower(&self, max_per_dim: u32) -> Result<Dispatch, EngineError> {
        use Operand::Tensor as T;
        let (m, n) = self.pre.shape();
        let mut operands = vec![T(self.pre)];
        operands.extend(self.activation.map(|(_, post)| T(post)));
        operands.extend([T(self.x), T(self.w), T(self.ones), T(self.bias)]);
        let kernel = forward_kernel(self.trans_b, self.activation.map(|(f, _)| f));
        let mut dispatch = product(
            kernel,
            (m, n, self.x.cols(), n),
            self.alpha,
            operands,
            max_per_dim,
        )?;
        // The bias counts as the rank-one product it replaces.
        dispatch.flop += 2.0 * (m * n) as f64;
        Ok(dispatch)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LinearWeightGrad {
    g: Tensor,
    h: Tensor,
    ones: Tensor,
    alpha: f64,
    dw: Tensor,
    db: Tensor,
}

impl LinearWeightGrad {
    /// `db = alpha ones^T g`, then `dw = alpha g^T h`, with the same g and alpha.
    pub(super) fn at_start_of(ops: &[Op]) -> Option<Self> {
        let [
            Op::Matmul(Matmul {
                a: ones,
                b: g,
                c: db,
                trans_a: true,
                trans_b: false,
                alpha,
                beta: 0.0,
            }),
            Op::Matmul(Matmul {
                a: g_again,
                b: h,
                c: dw,
                trans_a: true,
                trans_b: false,
                alpha: alpha_again,
                beta: 0.0,
            }),
            ..,
        ] = *ops
        else {
            return None;
        };
        let fusable = g_again == g
            && alpha_again == alpha
            && ones.cols() == 1
            && independent(&[dw, db], &[g, h, ones]);
        fusable.then_some(Self {
            g,
            h,
            ones,
            alpha,
            dw,
            db,
        })
    }

    /// The product as a pair holds it.
    pub(super) fn product(&self) -> Product {
        let (m, b_cols) = self.dw.shape();
        Product {
            kind: ProductKind::WeightGrad,
            m,
            n: b_cols + 1,
            k: self.g.rows(),
            b_cols,
            alpha: self.alpha,
            outputs: vec![self.dw, self.db],
            inputs: vec![self.g, self.h, self.ones],
        }
    }

    pub(super) fn lower(&self, max_per_dim: u32) -> Result<Dispatch, EngineError> {
        use Operand::Tensor as T;
        let (m, b_cols) = self.dw.shape();
        let operands = vec![T(self.dw), T(self.db), T(self.g), T(self.h), T(self.ones)];
        let shape = (m, b_cols + 1, self.g.rows(), b_cols);
        product(
            weight_grad_kernel(),
            shape,
            self.alpha,
            operands,
            max_per_dim,
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LinearInputGrad {
    g: Tensor,
    w: Tensor,
    trans_b: bool,
    alpha: f64,
    dh: Tensor,
    activation: Activation,
    pre: Tensor,
    grad_pre: Tensor,
}

impl LinearInputGrad {
    /// `dh = alpha g op(w)`, then `grad_pre = dh * f'(pre)`.
    pub(super) fn at_start_of(ops: &[Op]) -> Option<Self> {
        let [
            Op::Matmul(Matmul {
                a: g,
                b: w,
                c: dh,
                trans_a: false,
                trans_b,
                alpha,
                beta: 0.0,
            }),
            Op::ActivateGrad(ActivateGrad {
                f: activation,
                x: pre,
                grad_y,
                grad_x: grad_pre,
            }),
            ..,
        ] = *ops
        else {
            return None;
        };
        let fusable = grad_y == dh && independent(&[dh, grad_pre], &[g, w, pre]);
        fusable.then_some(Self {
            g,
            w,
            trans_b,
            alpha,
            dh,
            activation,
            pre,
            grad_pre,
        })
    }

    /// The product as a pair holds it.
    pub(super) fn product(&self) -> Product {
        let (m, n) = self.dh.shape();
        Product {
            kind: ProductKind::InputGrad {
                trans_b: self.trans_b,
                activation: self.activation,
            },
            m,
            n,
            k: self.g.cols(),
            b_cols: n,
            alpha: self.alpha,
            outputs: vec![self.dh, self.grad_pre],
            inputs: vec![self.g, self.w, self.pre],
        }
    }

    pub(super) fn lower(&self, max_per_dim: u32) -> Result<Dispatch, EngineError> {
        use Operand::Tensor as T;
        let (m, n) = self.dh.shape();
        let operands = vec![
            T(self.dh),
            T(self.grad_pre),
            T(self.g),
            T(self.w),
            T(self.pre),
        ];
        let kernel = input_grad_kernel(self.trans_b, self.activation);
        product(
            kernel,
            (m, n, self.g.cols(), n),
            self.alpha,
            operands,
            max_per_dim,
        )
    }
}
