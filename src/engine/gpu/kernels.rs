//! Kernels: a pipeline is an entry point of a shader module with its pipeline constants. Each op
//! family (`engine/op/`) and fused kernel (`engine/fusion/`) declares its WGSL file and builds
//! its own kernels; binding counts are read from the WGSL itself (`reflection.rs`). Here: what
//! they share, and the cache that creates each module, layout and pipeline once.

use super::adam_group::adam_group_source;
use super::product_pair::{ProductKind, product_pair_source};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

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

/// A kernel file of shaders/, declared by the op family (or fused kernel) that owns it with
/// [`shader_file!`](crate::shader_file).
#[derive(Debug)]
pub struct ShaderFile {
    /// The file's stem: `shaders/{name}.wgsl`.
    pub name: &'static str,
    pub source: &'static str,
    /// The snippets of [`SNIPPETS`] it uses besides the common ones, in the order prepended.
    pub snippets: &'static [&'static str],
    /// Whether every access goes through the kernel's own bounds logic: global loads and stores
    /// guarded by the problem's shape, workgroup-memory indices bounded by constants, divisions
    /// by constants only, loops bounded by the params. Natively such a module is compiled
    /// without wgpu's runtime bounds checks, which otherwise guard every index of a product's
    /// inner loop; the parity tests on shapes that end mid-tile in every dimension are what
    /// check that logic (tests/kernels.rs, tests/fusion.rs).
    pub self_bounded: bool,
}

/// Declares a [`ShaderFile`]: `shader_file!("matmul", snippets: [..], self_bounded: true)`.
#[macro_export]
#[doc(hidden)]
macro_rules! shader_file {
    ($name:literal, snippets: [$($snippet:literal),* $(,)?], self_bounded: $bounded:literal) => {
        $crate::engine::gpu::kernels::ShaderFile {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
            snippets: &[$($snippet),*],
            self_bounded: $bounded,
        }
    };
    ($name:literal) => {
        $crate::shader_file!($name, snippets: [], self_bounded: false)
    };
}

impl PartialEq for ShaderFile {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ShaderFile {}

impl std::hash::Hash for ShaderFile {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// A registered snippet's text.
fn snippet(name: &str) -> &'static str {
    SNIPPETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("snippet {name} is not registered"))
        .1
}

/// The common snippets and `snippets`, in the order they are prepended.
fn included(snippets: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    let snippets = snippets.iter().map(|&name| (name, snippet(name)));
    COMMON_SOURCES.iter().copied().chain(snippets).collect()
}

impl ShaderFile {
    /// The full source as compiled: common snippets, the file's own, then the file.
    pub fn compiled_source(&self) -> String {
        let mut source = String::new();
        for (name, snippet) in included(self.snippets) {
            source.push_str(&format!("// ---- {name} ----\n{snippet}\n"));
        }
        source.push_str(&format!("// ---- {}.wgsl ----\n{}", self.name, self.source));
        source
    }
}

/// Every kernel file of shaders/ that some kernel uses.
pub fn shader_files() -> Vec<&'static ShaderFile> {
    let mut files: Vec<&'static ShaderFile> = Vec::new();
    for kernel in Kernel::all() {
        if let Module::File(file) = kernel.module
            && !files.contains(&file)
        {
            files.push(file);
        }
    }
    files
}

/// The full source of a kernel file as compiled, by its stem.
pub fn shader_source(file: &str) -> Option<String> {
    let file = shader_files().into_iter().find(|f| f.name == file)?;
    Some(file.compiled_source())
}

/// The most tensors one Adam group dispatch updates (4 storage buffers each): a bound on the
/// generated modules, far above what the default MLP needs (6 tensors, 12 defended).
pub const MAX_ADAM_GROUP: u8 = 16;

/// Where a pipeline's shader module comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    /// A file of shaders/.
    File(&'static ShaderFile),
    /// Adam updates of this many tensors in one dispatch, written by adam_group.rs
    /// (2..=MAX_ADAM_GROUP).
    AdamGroup(u8),
    /// Two independent products in one dispatch, written per pair of kinds by product_pair.rs.
    ProductPair(ProductKind, ProductKind),
}

impl Module {
    /// The module's name, for labels and errors.
    pub fn name(self) -> &'static str {
        match self {
            Module::File(file) => file.name,
            Module::AdamGroup(_) => "adam_group",
            Module::ProductPair(..) => "product_pair",
        }
    }

    /// The full source compiled.
    pub fn source(self) -> String {
        match self {
            Module::File(file) => file.compiled_source(),
            Module::AdamGroup(tensors) => adam_group_source(
                usize::from(tensors),
                &included(&["common/adam_update.wgsl"]),
            ),
            // The tiling is copied per product rather than prepended (see product_pair.rs).
            Module::ProductPair(first, second) => product_pair_source(
                (first, second),
                &included(&["common/activation.wgsl"]),
                snippet("common/matmul_tile.wgsl"),
            ),
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn self_bounded(self) -> bool {
        matches!(self, Module::File(file) if file.self_bounded)
    }
}

/// The most pipeline constants a kernel sets (a product pair: three per product).
const MAX_CONSTANTS: usize = 6;

/// One compute pipeline: an entry point of a module with its pipeline-constant values (the
/// `override`s of its WGSL: transpositions, activations, op codes). Each op family builds its
/// own kernels; their bindings are read from the WGSL ([`Kernel::bindings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub module: Module,
    entry_point: &'static str,
    /// Name and value of each constant set; unused slots have an empty name.
    constants: [(&'static str, u8); MAX_CONSTANTS],
    /// The label's stem (the entry point unless set) and up to two suffixes (`_tn`, `_gelu`).
    label: (&'static str, [&'static str; 2]),
}

/// `nn`, `nt`, `tn` or `tt`: the transpositions of a product's operands, as labels show them.
pub fn transpositions(trans_a: bool, trans_b: bool) -> &'static str {
    match (trans_a, trans_b) {
        (false, false) => "nn",
        (false, true) => "nt",
        (true, false) => "tn",
        (true, true) => "tt",
    }
}

impl Kernel {
    /// The pipeline of `entry_point` in `module`, with no constants set.
    pub const fn new(module: Module, entry_point: &'static str) -> Self {
        Self {
            module,
            entry_point,
            constants: [("", 0); MAX_CONSTANTS],
            label: (entry_point, ["", ""]),
        }
    }

    /// The pipeline of `entry_point` in a file of shaders/.
    pub const fn of_file(file: &'static ShaderFile, entry_point: &'static str) -> Self {
        Self::new(Module::File(file), entry_point)
    }

    /// With the pipeline constant `name` set to `value` (a flag or an op code).
    pub fn with(mut self, name: &'static str, value: u8) -> Self {
        let entry_point = self.entry_point;
        let slot = (self.constants.iter_mut())
            .find(|(n, _)| n.is_empty() || *n == name)
            .unwrap_or_else(|| panic!("{entry_point}: more than {MAX_CONSTANTS} constants"));
        *slot = (name, value);
        self
    }

    /// With the pipeline constant `name` set to 1 where `flag`, else 0.
    pub fn with_flag(self, name: &'static str, flag: bool) -> Self {
        self.with(name, u8::from(flag))
    }

    /// Labelled `stem`, then each non-empty suffix after an underscore.
    pub fn labelled(mut self, stem: &'static str, suffixes: [&'static str; 2]) -> Self {
        self.label = (stem, suffixes);
        self
    }

    /// Labelled by its entry point, then each non-empty suffix after an underscore.
    pub fn suffixed(self, suffixes: [&'static str; 2]) -> Self {
        let stem = self.entry_point;
        self.labelled(stem, suffixes)
    }

    /// The value of the constant `name`, where set.
    pub fn constant(&self, name: &str) -> Option<u8> {
        (self.constants.iter())
            .find(|(n, _)| !n.is_empty() && *n == name)
            .map(|&(_, value)| value)
    }

    pub fn entry_point(&self) -> &'static str {
        self.entry_point
    }

    /// The stem of the module's file, or the name of the generated module.
    pub fn shader_file(&self) -> &'static str {
        self.module.name()
    }

    /// Every pipeline the engine can create (the validation test compiles each of them; the
    /// engine checks their bindings against the device's limits).
    pub fn all() -> Vec<Kernel> {
        let mut all = crate::engine::op::kernels();
        all.extend(crate::engine::fusion::kernels());
        all
    }

    /// Whether [`Kernel::all`] lists it: every kernel a lowering uses must be, for the
    /// validation test and `GpuEngine::compile_all` to cover it.
    pub fn is_listed(&self) -> bool {
        static ALL: OnceLock<HashSet<Kernel>> = OnceLock::new();
        ALL.get_or_init(|| Kernel::all().into_iter().collect())
            .contains(self)
    }

    /// The full source of the module this kernel's pipeline is made from.
    pub fn source(&self) -> String {
        self.module.source()
    }

    /// Pipeline-overridable constants (`override` declarations in the WGSL), as wgpu takes them.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        (self.constants.iter())
            .filter(|(name, _)| !name.is_empty())
            .map(|&(name, value)| (name, f64::from(value)))
            .collect()
    }

    /// The storage bindings of its entry point, read from the WGSL (see `reflection.rs`).
    pub fn bindings(&self) -> Bindings {
        super::reflection::bindings(self.module, self.entry_point)
    }

    /// A readable name for labels, timings and errors, e.g. `matmul_tn`, `activate_gelu`.
    pub fn label(&self) -> String {
        match self.module {
            Module::AdamGroup(tensors) => format!("adam_group_{tensors}"),
            Module::ProductPair(first, second) => {
                format!("product_pair_{}_{}", first.label(), second.label())
            }
            Module::File(_) => {
                let (stem, suffixes) = self.label;
                let mut label = stem.to_string();
                for suffix in suffixes.iter().filter(|s| !s.is_empty()) {
                    label.push('_');
                    label.push_str(suffix);
                }
                label
            }
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
    modules: HashMap<Module, wgpu::ShaderModule>,
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
            let module = (self.modules.entry(kernel.module))
                .or_insert_with(|| create_module(device, kernel.module));
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

/// The shader module: without runtime checks natively where the file is self-bounded
/// ([`ShaderFile::self_bounded`]), checked everywhere else and in the browser (WebGPU has no
/// such option).
fn create_module(device: &wgpu::Device, module: Module) -> wgpu::ShaderModule {
    let descriptor = wgpu::ShaderModuleDescriptor {
        label: Some(module.name()),
        source: wgpu::ShaderSource::Wgsl(module.source().into()),
    };
    #[cfg(not(target_arch = "wasm32"))]
    if module.self_bounded() {
        // SAFETY: these kernels never index out of bounds, divide by zero or loop without end
        // (ShaderFile::self_bounded says why; the parity tests check the bounds logic on shapes
        // that end mid-tile in every dimension).
        return unsafe {
            device.create_shader_module_trusted(descriptor, wgpu::ShaderRuntimeChecks::unchecked())
        };
    }
    device.create_shader_module(descriptor)
}
