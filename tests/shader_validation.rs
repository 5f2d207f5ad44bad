//! Every WGSL file parsed and validated by naga at WebGPU-level capabilities (no GPU needed), every
//! pipeline variant specialised with its constants, and the registry's metadata (files, entry
//! points, bindings as the engine reads them, workgroup limits) checked against the shaders themselves.

use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use specdef::engine::gpu::kernels::{
    Kernel, Module, PARAMS_BINDING_BYTES, shader_files, shader_source,
};
use specdef::engine::gpu::lower::params_layouts;
use specdef::engine::gpu::product_pair::ProductKind;
use std::collections::{BTreeMap, BTreeSet};

/// WebGPU's default limits, which the portable kernels must fit.
const MAX_INVOCATIONS: u32 = 256;
const MAX_WORKGROUP_STORAGE_BYTES: u32 = 16 * 1024;

fn parse_and_validate(file: &str) -> (naga::Module, ModuleInfo) {
    let source = shader_source(file).unwrap_or_else(|| panic!("{file} is not registered"));
    validate_source(file, &source)
}

fn validate_source(file: &str, source: &str) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{file}.wgsl: {}", e.emit_to_string(source)));
    // No capabilities beyond core WebGPU: no f16, no subgroups, no f64.
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{file}.wgsl: {}", e.emit_to_string(source)));
    (module, info)
}

#[test]
fn every_file_in_shaders_is_registered_and_vice_versa() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("shaders/ exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "wgsl").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    let registered: BTreeSet<String> = shader_files().iter().map(|f| f.name.to_string()).collect();
    assert_eq!(on_disk, registered);
}

#[test]
fn every_shader_file_validates_at_webgpu_capabilities() {
    for file in shader_files() {
        parse_and_validate(file.name);
    }
}

#[test]
fn every_pipeline_variant_specialises_and_fits_webgpu_limits() {
    for kernel in Kernel::all() {
        let name = kernel.label();
        // A generated module (an Adam group) is validated as the engine compiles it.
        let (module, info) = validate_source(&name, &kernel.source());
        let constants: naga::back::PipelineConstants = kernel
            .constants()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, kernel.entry_point())),
            &constants,
        )
        .unwrap_or_else(|e| panic!("{name}: pipeline constants: {e}"));

        let (index, entry) = module
            .entry_points
            .iter()
            .enumerate()
            .find(|(_, ep)| ep.name == kernel.entry_point())
            .unwrap_or_else(|| panic!("{name}: no entry point {}", kernel.entry_point()));
        let invocations: u32 = entry.workgroup_size.iter().product();
        assert!(
            invocations <= MAX_INVOCATIONS,
            "{name}: {invocations} invocations"
        );

        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layout");
        let usage = info.get_entry_point(index);
        let mut workgroup_bytes = 0;
        let mut storage_bindings = BTreeSet::new();
        let mut uniform_bindings = BTreeSet::new();
        for (handle, global) in module.global_variables.iter() {
            if usage[handle].is_empty() {
                continue;
            }
            match global.space {
                naga::AddressSpace::WorkGroup => workgroup_bytes += layouter[global.ty].size,
                naga::AddressSpace::Storage { access } => {
                    let binding = global.binding.as_ref().expect("storage is bound");
                    assert_eq!(binding.group, 0, "{name}");
                    let writable = access.contains(naga::StorageAccess::STORE);
                    storage_bindings.insert((binding.binding, writable));
                }
                naga::AddressSpace::Uniform => {
                    uniform_bindings.insert(global.binding.as_ref().expect("bound").binding);
                }
                _ => {}
            }
        }
        assert!(
            workgroup_bytes <= MAX_WORKGROUP_STORAGE_BYTES,
            "{name}: {workgroup_bytes} bytes of workgroup storage"
        );
        assert_eq!(
            uniform_bindings,
            BTreeSet::from([0]),
            "{name}: params at binding 0"
        );

        // The bindings the engine reads from the WGSL (gpu/reflection.rs) match what this
        // independent walk finds after the constants are applied: outputs writable first, then
        // read-only inputs.
        let bindings = kernel.bindings();
        let expected: BTreeSet<(u32, bool)> = (0..bindings.storage_count())
            .map(|i| (bindings.binding_of(i), i < bindings.outputs))
            .collect();
        assert_eq!(storage_bindings, expected, "{name}: storage bindings");
    }
}

/// Fields whose name starts with `_` are padding on both sides.
fn is_padding(name: &str) -> bool {
    name.starts_with('_')
}

/// The params uniform's struct in one shader file: its name, its size, and naga's offset of each
/// member that is not padding.
fn wgsl_params_layout(file: &str) -> (String, u32, BTreeMap<String, u32>) {
    let (module, _) = parse_and_validate(file);
    params_layout_of(file, &module)
}

/// The same in a parsed module.
fn params_layout_of(file: &str, module: &naga::Module) -> (String, u32, BTreeMap<String, u32>) {
    let mut uniforms = module
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == naga::AddressSpace::Uniform);
    let (_, params) = uniforms
        .next()
        .unwrap_or_else(|| panic!("{file}.wgsl has no params uniform"));
    assert!(uniforms.next().is_none(), "{file}.wgsl: one uniform only");
    let ty = &module.types[params.ty];
    let name = ty
        .name
        .clone()
        .unwrap_or_else(|| panic!("{file}.wgsl: the params struct is unnamed"));
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{file}.wgsl: params is not a struct");
    };
    let offsets = members
        .iter()
        .filter_map(|m| {
            let field = m.name.clone().expect("struct members are named");
            (!is_padding(&field)).then_some((field, m.offset))
        })
        .collect();
    (name, *span, offsets)
}

/// The params struct each kernel reads must have the layout lower.rs writes: naga's offset of
/// every non-padding WGSL member equals `offset_of!` of the Rust field of the same name, and
/// neither side has a field the other lacks. A field reordered on either side fails here.
#[test]
fn params_structs_match_their_rust_layout() {
    let rust: BTreeMap<&str, Vec<(&str, usize)>> = params_layouts().into_iter().collect();
    let mut seen = BTreeSet::new();
    for file in shader_files() {
        let file = file.name;
        let (name, size, wgsl) = wgsl_params_layout(file);
        assert!(
            u64::from(size) <= PARAMS_BINDING_BYTES,
            "{file}.wgsl: {name} is {size} bytes, over the {PARAMS_BINDING_BYTES} bound"
        );
        let fields = rust
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{file}.wgsl: {name} is missing from params_layouts()"));
        let rust_fields: BTreeMap<String, u32> = fields
            .iter()
            .map(|&(field, offset)| (field.to_string(), offset as u32))
            .collect();
        assert_eq!(
            wgsl, rust_fields,
            "{file}.wgsl: {name}: WGSL offsets (left) against the Rust struct's (right)"
        );
        seen.insert(name);
    }
    // The product pairs' generated modules: `PairParams` holds two `ProductParams`, 32 bytes
    // apart.
    let pair = Module::ProductPair(
        ProductKind::WeightGrad,
        ProductKind::Matmul {
            trans_a: false,
            trans_b: true,
        },
    );
    let (module, _) = validate_source("product_pair", &pair.source());
    let (name, size, wgsl) = params_layout_of("product_pair", &module);
    assert_eq!((name.as_str(), size), ("PairParams", 64));
    let (_, product) = (module.types.iter())
        .find(|(_, ty)| ty.name.as_deref() == Some("ProductParams"))
        .expect("the pair module declares ProductParams");
    let naga::TypeInner::Struct { members, span } = &product.inner else {
        panic!("ProductParams is not a struct");
    };
    assert_eq!((*span, wgsl["product"]), (32, 0));
    let product_fields: BTreeMap<String, u32> = (members.iter())
        .map(|m| (m.name.clone().expect("named"), m.offset))
        .filter(|(field, _)| !is_padding(field))
        .collect();
    let rust_fields: BTreeMap<String, u32> = rust["ProductParams"]
        .iter()
        .map(|&(field, offset)| (field.to_string(), offset as u32))
        .collect();
    assert_eq!(
        product_fields, rust_fields,
        "ProductParams: WGSL (left) against Rust"
    );
    seen.insert("ProductParams".to_string());
    let listed: BTreeSet<String> = rust.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        listed, seen,
        "params_layouts() lists a struct no shader uses"
    );
}

/// Browsers (Tint) reject float literals that are not exactly representable, where naga rounds
/// them: LOWEST_F32 must be exactly f32::MIN as naga reads it.
#[test]
fn the_lowest_f32_constant_is_exactly_f32_min() {
    let (module, _) = parse_and_validate("reduce");
    let (_, constant) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some("LOWEST_F32"))
        .expect("reduce.wgsl sees LOWEST_F32 from common/grid.wgsl");
    match module.global_expressions[constant.init] {
        naga::Expression::Literal(naga::Literal::F32(value)) => assert_eq!(value, f32::MIN),
        ref other => panic!("LOWEST_F32 is {other:?}, not an f32 literal"),
    }
}

/// Tint (Chromium's WGSL compiler) rejects a float literal beyond f32's finite range even where it
/// would round to f32::MAX, which naga accepts: scan every decimal literal in every shader.
#[test]
fn no_float_literal_exceeds_the_f32_range() {
    for file in shader_files() {
        let file = file.name;
        let source = shader_source(file).unwrap();
        for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '+')) {
                let digits = word.trim_end_matches('f').trim_start_matches('+');
                let decimal = digits.starts_with(|c: char| c.is_ascii_digit())
                    && !digits.starts_with("0x")
                    && digits.contains(['.', 'e']);
                if let (true, Ok(value)) = (decimal, digits.parse::<f64>()) {
                    assert!(
                        value <= f32::MAX as f64,
                        "{file}.wgsl: literal {word} is beyond f32's range: {line}"
                    );
                }
            }
        }
    }
}
