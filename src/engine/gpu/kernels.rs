//! The kernel registry: every WGSL file, every pipeline variant made from it, and the cache that
//! creates each pipeline once. Shader metadata (files, entry points, pipeline constants, binding
//! counts) lives here and nowhere else; tests/shader_validation.rs checks it against shaders/.

use super::adam_group::adam_group_source;
use super::product_pair::{ProductKind, activation_code, product_pair_source};
use crate::engine::op::{Activation, BinaryOp, Reduction, UnaryOp};
use std::collections::HashMap;

/// Snippets prepended to every kernel (WGSL has no include).
pub const COMMON_SOURCES: &[(&str, &str)] = &[(
    "common/grid.wgsl",
    include_str!("../../../shaders/common/grid.wgsl"),
)];

/// Snippets prepended to the files that use them, after the common ones.
pub const SNIPPETS: &[(&str, &str)] = &[
    (
        "common/activation.wgsl",
        include_str!("../../../shaders/common/activation.wgsl"),
    ),
    (
        "common/matmul_tile.wgsl",
        include_str!("../../../shaders/common/matmul_tile.wgsl"),
    ),
    (
        "common/matmul_tile_large.wgsl",
        include_str!("../../../shaders/common/matmul_tile_large.wgsl"),
    ),
    (
        "common/adam_update.wgsl",
        include_str!("../../../shaders/common/adam_update.wgsl"),
    ),
];

/// The snippets a kernel file uses besides the common ones.
fn snippets_of(file: &str) -> &'static [&'static str] {
    match file {
        "elementwise" => &["common/activation.wgsl"],
        "matmul" => &["common/matmul_tile.wgsl", "common/matmul_tile_large.wgsl"],
        "linear" => &["common/activation.wgsl", "common/matmul_tile.wgsl"],
        "adam" | "adam_group" => &["common/adam_update.wgsl"],
        // The tiling is copied per product rather than prepended (see product_pair.rs).
        "product_pair" => &["common/activation.wgsl"],
        _ => &[],
    }
}

/// Every kernel file in shaders/, by file stem.
pub const SHADER_FILES: &[(&str, &str)] = &[
    ("matmul", include_str!("../../../shaders/matmul.wgsl")),
    ("linear", include_str!("../../../shaders/linear.wgsl")),
    (
        "cross_entropy_sum",
        include_str!("../../../shaders/cross_entropy_sum.wgsl"),
    ),
    (
        "elementwise",
        include_str!("../../../shaders/elementwise.wgsl"),
    ),
    ("reduce", include_str!("../../../shaders/reduce.wgsl")),
    (
        "softmax_cross_entropy",
        include_str!("../../../shaders/softmax_cross_entropy.wgsl"),
    ),
    ("transpose", include_str!("../../../shaders/transpose.wgsl")),
    ("momentum", include_str!("../../../shaders/momentum.wgsl")),
    ("adam", include_str!("../../../shaders/adam.wgsl")),
    ("jacobi", include_str!("../../../shaders/jacobi.wgsl")),
    (
        "device_scalar",
        include_str!("../../../shaders/device_scalar.wgsl"),
    ),
    ("random", include_str!("../../../shaders/random.wgsl")),
    (
        "adahessian",
        include_str!("../../../shaders/adahessian.wgsl"),
    ),
    ("sophia", include_str!("../../../shaders/sophia.wgsl")),
    ("damping", include_str!("../../../shaders/damping.wgsl")),
];

/// A registered snippet's text.
fn snippet(name: &str) -> &'static str {
    SNIPPETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("registered")
        .1
}

/// The common snippets and those `file` uses, in the order they are prepended.
fn included_by(file: &str) -> Vec<(&'static str, &'static str)> {
    let snippets = snippets_of(file).iter().map(|&name| (name, snippet(name)));
    COMMON_SOURCES.iter().copied().chain(snippets).collect()
}

/// The full source of a kernel file as compiled: common snippets, then the file.
pub fn shader_source(file: &str) -> Option<String> {
    let body = SHADER_FILES.iter().find(|(name, _)| *name == file)?.1;
    let mut source = String::new();
    for (name, snippet) in included_by(file) {
        source.push_str(&format!("// ---- {name} ----\n{snippet}\n"));
    }
    source.push_str(&format!("// ---- {file}.wgsl ----\n{body}"));
    Some(source)
}

/// The most tensors one Adam group dispatch updates (4 storage buffers each): a bound on the
/// generated modules, far above what the default MLP needs (6 tensors, 12 defended).
pub const MAX_ADAM_GROUP: u8 = 16;

/// One compute pipeline: a shader entry point with its pipeline-constant values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// A product in 64x64 tiles.
    Matmul {
        trans_a: bool,
        trans_b: bool,
    },
    /// A product in 128x128 tiles, for large outputs (`lower::MatmulTile::for_shape`).
    MatmulLarge {
        trans_a: bool,
        trans_b: bool,
    },
    /// The fused forward of a linear layer: product, bias, and the activation where there is one.
    LinearForward {
        trans_b: bool,
        activation: Option<Activation>,
    },
    /// The fused weight and bias gradients of a linear layer.
    LinearWeightGrad,
    /// The fused input gradient of a linear layer through the previous layer's activation.
    LinearInputGrad {
        trans_b: bool,
        activation: Activation,
    },
    /// Two independent products in one dispatch (its WGSL is written per pair of kinds by
    /// product_pair.rs).
    ProductPair {
        first: ProductKind,
        second: ProductKind,
    },
    /// Softmax cross-entropy with the sum of its losses.
    SoftmaxCrossEntropySum,
    /// Adam updates of `tensors` tensors with the same hyper-parameters in one dispatch
    /// (2..=MAX_ADAM_GROUP; its WGSL is written per size by adam_group.rs).
    AdamGroup {
        tensors: u8,
    },
    Activate(Activation),
    ActivateGrad(Activation),
    ActivateGradJvp(Activation),
    Binary(BinaryOp),
    Scale,
    Axpy,
    Fill,
    Reduce(Reduction),
    SoftmaxCrossEntropy,
    SoftmaxCrossEntropyJvp,
    Transpose,
    Momentum,
    Adam,
    JacobiRound,
    AxpyDevice,
    ScaleDevice,
    Unary(UnaryOp),
    Ema,
    Rademacher,
    SampleCategorical,
    AdaHessian,
    Sophia,
    DampingUpdate,
}

impl Kernel {
    /// Every pipeline the engine can create (the validation test compiles each of them).
    pub fn all() -> Vec<Kernel> {
        let mut all = Vec::new();
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                all.push(Kernel::Matmul { trans_a, trans_b });
                all.push(Kernel::MatmulLarge { trans_a, trans_b });
            }
        }
        for trans_b in [false, true] {
            all.push(Kernel::LinearForward {
                trans_b,
                activation: None,
            });
            for f in Activation::ALL {
                all.push(Kernel::LinearForward {
                    trans_b,
                    activation: Some(f),
                });
                all.push(Kernel::LinearInputGrad {
                    trans_b,
                    activation: f,
                });
            }
        }
        all.extend([Kernel::LinearWeightGrad, Kernel::SoftmaxCrossEntropySum]);
        all.extend((2..=MAX_ADAM_GROUP).map(|tensors| Kernel::AdamGroup { tensors }));
        for first in ProductKind::all() {
            for second in ProductKind::all() {
                all.push(Kernel::ProductPair { first, second });
            }
        }
        for f in Activation::ALL {
            all.push(Kernel::Activate(f));
            all.push(Kernel::ActivateGrad(f));
            all.push(Kernel::ActivateGradJvp(f));
        }
        all.extend(BinaryOp::ALL.map(Kernel::Binary));
        all.extend([Kernel::Scale, Kernel::Axpy, Kernel::Fill]);
        all.extend(Reduction::ALL.map(Kernel::Reduce));
        all.extend([
            Kernel::SoftmaxCrossEntropy,
            Kernel::SoftmaxCrossEntropyJvp,
            Kernel::Transpose,
            Kernel::Momentum,
            Kernel::Adam,
            Kernel::JacobiRound,
            Kernel::AxpyDevice,
            Kernel::ScaleDevice,
        ]);
        all.extend(UnaryOp::ALL.map(Kernel::Unary));
        all.extend([
            Kernel::Ema,
            Kernel::Rademacher,
            Kernel::SampleCategorical,
            Kernel::AdaHessian,
            Kernel::Sophia,
            Kernel::DampingUpdate,
        ]);
        all
    }

    /// The full source of the module this kernel's pipeline is made from.
    pub fn source(self) -> String {
        match self {
            Kernel::AdamGroup { tensors } => {
                adam_group_source(usize::from(tensors), &included_by(self.shader_file()))
            }
            Kernel::ProductPair { first, second } => product_pair_source(
                (first, second),
                &included_by(self.shader_file()),
                snippet("common/matmul_tile.wgsl"),
            ),
            _ => shader_source(self.shader_file()).expect("every kernel's file is registered"),
        }
    }

    /// Which module the kernel's pipeline comes from: its file, and the group size of a
    /// generated one.
    fn module_key(self) -> (&'static str, u8) {
        match self {
            Kernel::AdamGroup { tensors } => (self.shader_file(), tensors),
            Kernel::ProductPair { first, second } => (
                self.shader_file(),
                3 * first.module_index() + second.module_index(),
            ),
            _ => (self.shader_file(), 0),
        }
    }

    pub fn shader_file(self) -> &'static str {
        match self {
            Kernel::Matmul { .. } | Kernel::MatmulLarge { .. } => "matmul",
            Kernel::LinearForward { .. }
            | Kernel::LinearWeightGrad
            | Kernel::LinearInputGrad { .. } => "linear",
            Kernel::SoftmaxCrossEntropySum => "cross_entropy_sum",
            Kernel::AdamGroup { .. } => "adam_group",
            Kernel::ProductPair { .. } => "product_pair",
            Kernel::Activate(_)
            | Kernel::ActivateGrad(_)
            | Kernel::ActivateGradJvp(_)
            | Kernel::Binary(_)
            | Kernel::Scale
            | Kernel::Axpy
            | Kernel::Fill
            | Kernel::Unary(_)
            | Kernel::Ema => "elementwise",
            Kernel::Reduce(_) => "reduce",
            Kernel::SoftmaxCrossEntropy | Kernel::SoftmaxCrossEntropyJvp => "softmax_cross_entropy",
            Kernel::Transpose => "transpose",
            Kernel::Momentum => "momentum",
            Kernel::Adam => "adam",
            Kernel::JacobiRound => "jacobi",
            Kernel::AxpyDevice | Kernel::ScaleDevice => "device_scalar",
            Kernel::Rademacher | Kernel::SampleCategorical => "random",
            Kernel::AdaHessian => "adahessian",
            Kernel::Sophia => "sophia",
            Kernel::DampingUpdate => "damping",
        }
    }

    pub fn entry_point(self) -> &'static str {
        match self {
            Kernel::Matmul { .. } => "matmul",
            Kernel::MatmulLarge { .. } => "matmul_large",
            Kernel::LinearForward {
                activation: None, ..
            } => "linear_forward",
            Kernel::LinearForward { .. } => "linear_forward_activate",
            Kernel::LinearWeightGrad => "linear_weight_grad",
            Kernel::LinearInputGrad { .. } => "linear_input_grad",
            Kernel::SoftmaxCrossEntropySum => "softmax_cross_entropy_sum",
            Kernel::AdamGroup { .. } => "adam_group",
            Kernel::ProductPair { .. } => "product_pair",
            Kernel::Activate(_) => "activate",
            Kernel::ActivateGrad(_) => "activate_grad",
            Kernel::ActivateGradJvp(_) => "activate_grad_jvp",
            Kernel::Binary(_) => "binary",
            Kernel::Scale => "scale",
            Kernel::Axpy => "axpy",
            Kernel::Fill => "fill",
            Kernel::Reduce(_) => "reduce_segments",
            Kernel::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Kernel::SoftmaxCrossEntropyJvp => "softmax_cross_entropy_jvp",
            Kernel::Transpose => "transpose",
            Kernel::Momentum => "momentum",
            Kernel::Adam => "adam",
            Kernel::JacobiRound => "jacobi_round",
            Kernel::AxpyDevice => "axpy_device",
            Kernel::ScaleDevice => "scale_device",
            Kernel::Unary(_) => "unary",
            Kernel::Ema => "ema",
            Kernel::Rademacher => "rademacher",
            Kernel::SampleCategorical => "sample_categorical",
            Kernel::AdaHessian => "adahessian",
            Kernel::Sophia => "sophia",
            Kernel::DampingUpdate => "damping_update",
        }
    }

    /// Pipeline-overridable constants (`override` declarations in the WGSL).
    pub fn constants(self) -> Vec<(&'static str, f64)> {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        match self {
            Kernel::Matmul { trans_a, trans_b } | Kernel::MatmulLarge { trans_a, trans_b } => {
                vec![("TRANS_A", flag(trans_a)), ("TRANS_B", flag(trans_b))]
            }
            Kernel::LinearForward {
                trans_b,
                activation,
            } => {
                let mut constants = vec![("TRANS_A", 0.0), ("TRANS_B", flag(trans_b))];
                constants.extend(activation.map(|f| ("ACTIVATION", activation_code(f))));
                constants
            }
            Kernel::LinearWeightGrad => vec![("TRANS_A", 1.0), ("TRANS_B", 0.0)],
            Kernel::LinearInputGrad {
                trans_b,
                activation,
            } => vec![
                ("TRANS_A", 0.0),
                ("TRANS_B", flag(trans_b)),
                ("ACTIVATION", activation_code(activation)),
            ],
            Kernel::ProductPair { first, second } => {
                let mut constants = first.constants(0);
                constants.extend(second.constants(1));
                constants
            }
            Kernel::Activate(f) | Kernel::ActivateGrad(f) | Kernel::ActivateGradJvp(f) => {
                vec![("OP", activation_code(f))]
            }
            Kernel::Binary(op) => vec![(
                "OP",
                match op {
                    BinaryOp::Add => 0.0,
                    BinaryOp::Sub => 1.0,
                    BinaryOp::Mul => 2.0,
                },
            )],
            Kernel::Reduce(r) => vec![(
                "OP",
                match r {
                    Reduction::Sum => 0.0,
                    Reduction::SumOfSquares => 1.0,
                    Reduction::Max => 2.0,
                },
            )],
            Kernel::Unary(op) => vec![(
                "OP",
                match op {
                    UnaryOp::Abs => 0.0,
                    UnaryOp::Sign => 1.0,
                    UnaryOp::Sigmoid => 2.0,
                    UnaryOp::Softplus => 3.0,
                    UnaryOp::Exp => 4.0,
                    UnaryOp::Log1p => 5.0,
                },
            )],
            Kernel::Scale
            | Kernel::Axpy
            | Kernel::Fill
            | Kernel::SoftmaxCrossEntropySum
            | Kernel::AdamGroup { .. }
            | Kernel::SoftmaxCrossEntropy
            | Kernel::SoftmaxCrossEntropyJvp
            | Kernel::Transpose
            | Kernel::Momentum
            | Kernel::Adam
            | Kernel::JacobiRound
            | Kernel::AxpyDevice
            | Kernel::ScaleDevice
            | Kernel::Ema
            | Kernel::Rademacher
            | Kernel::SampleCategorical
            | Kernel::AdaHessian
            | Kernel::Sophia
            | Kernel::DampingUpdate => Vec::new(),
        }
    }

    /// The storage bindings: outputs (read_write) from binding 1, then read-only inputs.
    pub fn bindings(self) -> Bindings {
        let (outputs, inputs) = match self {
            // linear.wgsl's inputs start at binding 3 whatever its outputs (see below).
            Kernel::LinearForward { activation, .. } => {
                return Bindings {
                    outputs: if activation.is_some() { 2 } else { 1 },
                    inputs: 4,
                    first_input: 3,
                };
            }
            Kernel::LinearWeightGrad | Kernel::LinearInputGrad { .. } => {
                return Bindings {
                    outputs: 2,
                    inputs: 3,
                    first_input: 3,
                };
            }
            // loss, grad, loss_sum; logits, labels.
            Kernel::SoftmaxCrossEntropySum => (3, 2),
            // param, m, v of each tensor; each gradient.
            Kernel::AdamGroup { tensors } => (3 * usize::from(tensors), usize::from(tensors)),
            // The first product's outputs, the second's; the first's inputs, the second's.
            Kernel::ProductPair { first, second } => (
                first.outputs() + second.outputs(),
                first.inputs() + second.inputs(),
            ),
            Kernel::Matmul { .. } | Kernel::MatmulLarge { .. } => (1, 2),
            Kernel::Activate(_) => (1, 1),
            Kernel::ActivateGrad(_) => (1, 2),
            // x, grad_y, dx, d_grad_y.
            Kernel::ActivateGradJvp(_) => (1, 4),
            Kernel::Binary(_) => (1, 2),
            Kernel::Scale | Kernel::Axpy => (1, 1),
            Kernel::Fill => (1, 0),
            Kernel::Reduce(_) => (1, 1),
            Kernel::SoftmaxCrossEntropy => (2, 2),
            // logits, labels, d_logits.
            Kernel::SoftmaxCrossEntropyJvp => (2, 3),
            Kernel::Transpose => (1, 1),
            Kernel::Momentum => (2, 1),
            Kernel::Adam => (3, 1),
            Kernel::JacobiRound => (2, 0),
            // x, then the scalar's num and den (x again where one is absent).
            Kernel::AxpyDevice | Kernel::ScaleDevice => (1, 3),
            Kernel::Unary(_) => (1, 1),
            // avg (in place), x.
            Kernel::Ema => (1, 1),
            Kernel::Rademacher => (1, 0),
            // labels, logits.
            Kernel::SampleCategorical => (1, 1),
            // param, m, v; grad, hess_diag.
            Kernel::AdaHessian => (3, 2),
            // param, m; grad, hess.
            Kernel::Sophia => (2, 2),
            // lambda; actual, predicted.
            Kernel::DampingUpdate => (1, 2),
        };
        Bindings::packed(outputs, inputs)
    }

    /// A readable name for labels, timings and errors, e.g. `matmul_tn`, `activate_gelu`.
    pub fn label(self) -> String {
        match self {
            Kernel::Matmul { trans_a, trans_b } => format!(
                "matmul_{}{}",
                if trans_a { 't' } else { 'n' },
                if trans_b { 't' } else { 'n' }
            ),
            Kernel::MatmulLarge { trans_a, trans_b } => format!(
                "matmul_large_{}{}",
                if trans_a { 't' } else { 'n' },
                if trans_b { 't' } else { 'n' }
            ),
            Kernel::LinearForward {
                trans_b,
                activation,
            } => format!(
                "linear_forward_n{}{}",
                if trans_b { 't' } else { 'n' },
                activation.map_or(String::new(), |f| format!("_{}", f.name()))
            ),
            Kernel::LinearInputGrad {
                trans_b,
                activation,
            } => format!(
                "linear_input_grad_n{}_{}",
                if trans_b { 't' } else { 'n' },
                activation.name()
            ),
            Kernel::Activate(f) => format!("activate_{}", f.name()),
            Kernel::ActivateGrad(f) => format!("activate_grad_{}", f.name()),
            Kernel::ActivateGradJvp(f) => format!("activate_grad_jvp_{}", f.name()),
            Kernel::Binary(op) => format!("binary_{}", op.name()),
            Kernel::Reduce(r) => format!("reduce_{}", r.name()),
            Kernel::Unary(op) => format!("unary_{}", op.name()),
            Kernel::AdamGroup { tensors } => format!("adam_group_{tensors}"),
            Kernel::ProductPair { first, second } => {
                format!("product_pair_{}_{}", first.label(), second.label())
            }
            other => other.entry_point().to_string(),
        }
    }
}

/// Where a kernel's storage buffers bind: outputs (read_write) at bindings 1..=outputs, inputs
/// (read-only) from `first_input` on. Operands are listed in that order, outputs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bindings {
    pub outputs: usize,
    pub inputs: usize,
    /// `outputs + 1`, except where a file's entry points share globals and one of them leaves
    /// an output out (linear_forward has no binding 2).
    pub first_input: usize,
}

impl Bindings {
    /// Outputs then inputs, with no gap.
    pub const fn packed(outputs: usize, inputs: usize) -> Self {
        Self {
            outputs,
            inputs,
            first_input: outputs + 1,
        }
    }

    pub fn storage_count(self) -> usize {
        self.outputs + self.inputs
    }

    /// The binding number of operand `i` (outputs first, then inputs).
    pub fn binding_of(self, i: usize) -> u32 {
        if i < self.outputs {
            1 + i as u32
        } else {
            (self.first_input + i - self.outputs) as u32
        }
    }
}

/// Size of one dispatch's uniform slot: every params struct fits in it, and it is a multiple of
/// every adapter's `min_uniform_buffer_offset_alignment` (at most 256 by the WebGPU spec).
pub const PARAMS_SLOT_BYTES: u64 = 256;
/// The bytes of each slot the shaders read (the largest params struct, a product pair's, is 64
/// bytes).
pub const PARAMS_BINDING_BYTES: u64 = 64;

/// Creates shader modules, layouts and pipelines on first use and keeps them.
#[derive(Default)]
pub struct PipelineCache {
    modules: HashMap<(&'static str, u8), wgpu::ShaderModule>,
    layouts: HashMap<Bindings, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
}

impl PipelineCache {
    pub fn bind_group_layout(
        &mut self,
        device: &wgpu::Device,
        bindings: Bindings,
    ) -> &wgpu::BindGroupLayout {
        &self.layout(device, bindings).0
    }

    fn layout(
        &mut self,
        device: &wgpu::Device,
        bindings: Bindings,
    ) -> &(wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        self.layouts.entry(bindings).or_insert_with(|| {
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(PARAMS_BINDING_BYTES),
                },
                count: None,
            }];
            for i in 0..bindings.storage_count() {
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: bindings.binding_of(i),
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: i >= bindings.outputs,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
            }
            let label = format!(
                "layout_{}out_{}in_from{}",
                bindings.outputs, bindings.inputs, bindings.first_input
            );
            let bind_group_layout =
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(&label),
                    entries: &entries,
                });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&bind_group_layout)],
                immediate_size: 0,
            });
            (bind_group_layout, pipeline_layout)
        })
    }

    /// The pipeline for `kernel`, compiled on first use.
    pub fn pipeline(&mut self, device: &wgpu::Device, kernel: Kernel) -> &wgpu::ComputePipeline {
        if !self.pipelines.contains_key(&kernel) {
            let module = (self.modules.entry(kernel.module_key()))
                .or_insert_with(|| create_module(device, kernel));
            let module = module.clone();
            let layout = self.layout(device, kernel.bindings()).1.clone();
            let constants = kernel.constants();
            let label = kernel.label();
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(kernel.entry_point()),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    // Kernels write their workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            self.pipelines.insert(kernel, pipeline);
        }
        &self.pipelines[&kernel]
    }
}

/// Kernel files whose every access goes through their own bounds logic: global loads and stores
/// guarded by the problem's shape, workgroup-memory indices bounded by constants, divisions by
/// constants only, loops bounded by the params. That logic is what the parity tests on awkward
/// shapes exercise (tests/kernels.rs for both tile configurations, tests/fusion.rs for the
/// linear kernels), so natively these modules are compiled without wgpu's runtime bounds checks,
/// which otherwise guard every index of the products' inner loops.
pub const SELF_BOUNDED_FILES: &[&str] = &["matmul", "linear"];

/// The shader module of `kernel`: without runtime checks natively for `SELF_BOUNDED_FILES`,
/// checked everywhere else and in the browser (WebGPU has no such option).
fn create_module(device: &wgpu::Device, kernel: Kernel) -> wgpu::ShaderModule {
    let descriptor = wgpu::ShaderModuleDescriptor {
        label: Some(kernel.shader_file()),
        source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
    };
    #[cfg(not(target_arch = "wasm32"))]
    if SELF_BOUNDED_FILES.contains(&kernel.shader_file()) {
        // SAFETY: these kernels never index out of bounds, divide by zero or loop without end
        // (SELF_BOUNDED_FILES says why; the parity tests check the bounds logic on shapes that
        // end mid-tile in every dimension).
        return unsafe {
            device.create_shader_module_trusted(descriptor, wgpu::ShaderRuntimeChecks::unchecked())
        };
    }
    device.create_shader_module(descriptor)
}
