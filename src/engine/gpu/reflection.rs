//! Each kernel's bindings, read from its WGSL with naga (the shader front end wgpu itself uses),
//! so no list of binding counts is written by hand. A module is parsed and validated once per
//! process; what each entry point uses is what it binds.
//!
//! The convention every kernel follows: params at binding 0 (uniform), its read-write storage
//! buffers (outputs) at bindings 1, 2, ..., then its read-only ones (inputs) in a run of their
//! own. A module whose entry point breaks it is a bug in the shader, reported with its name.

use super::kernels::{Bindings, Module};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Per module, each entry point's bindings.
type Reflected = HashMap<String, Bindings>;

fn cache() -> &'static Mutex<HashMap<Module, Reflected>> {
    static CACHE: OnceLock<Mutex<HashMap<Module, Reflected>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// The storage bindings of `entry_point` in `module`.
pub fn bindings(module: Module, entry_point: &str) -> Bindings {
    let mut cache = cache()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let entries = cache.entry(module).or_insert_with(|| reflect(module));
    *entries
        .get(entry_point)
        .unwrap_or_else(|| panic!("{} has no entry point {entry_point}", module.name()))
}

/// Every entry point's bindings in `module`.
fn reflect(module: Module) -> Reflected {
    let name = module.name();
    let source = module.source();
    let parsed = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&parsed)
        .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&source)));
    let mut reflected = HashMap::new();
    for (index, entry) in parsed.entry_points.iter().enumerate() {
        let usage = info.get_entry_point(index);
        let mut storage: Vec<(u32, bool)> = parsed
            .global_variables
            .iter()
            .filter(|&(handle, _)| !usage[handle].is_empty())
            .filter_map(|(_, global)| match global.space {
                naga::AddressSpace::Storage { access } => {
                    let binding = global.binding.as_ref()?.binding;
                    Some((binding, access.contains(naga::StorageAccess::STORE)))
                }
                _ => None,
            })
            .collect();
        storage.sort_unstable();
        reflected.insert(entry.name.clone(), layout_of(name, &entry.name, &storage));
    }
    reflected
}

/// The [`Bindings`] of sorted `(binding, writable)` pairs: outputs at 1..=outputs, inputs in one
/// run after them.
fn layout_of(module: &str, entry: &str, storage: &[(u32, bool)]) -> Bindings {
    let outputs: Vec<u32> = storage.iter().filter(|b| b.1).map(|b| b.0).collect();
    let inputs: Vec<u32> = storage.iter().filter(|b| !b.1).map(|b| b.0).collect();
    let contiguous = |run: &[u32]| run.windows(2).all(|w| w[1] == w[0] + 1);
    let outputs_first = outputs.iter().enumerate().all(|(i, &b)| b == i as u32 + 1);
    let first_input = inputs.first().map_or(outputs.len() + 1, |&b| b as usize);
    assert!(
        outputs_first && contiguous(&inputs) && first_input > outputs.len(),
        "{module}.wgsl, {entry}: storage bindings {storage:?} break the convention \
         (read_write buffers at 1, 2, ..., then read-only ones in one run)"
    );
    Bindings {
        outputs: outputs.len(),
        inputs: inputs.len(),
        first_input,
    }
}
