//! The WGSL of one Adam dispatch over a group of tensors (the fusion of
//! src/engine/fusion/adam_group.rs). WGSL cannot index an array of buffers in its core language,
//! so the module is written per group size: tensor t binds its parameter and moments read-write at
//! 3t+1..3t+3 and its gradient read-only at 3n+1+t; invocation i updates element i of the
//! concatenation of the tensors, with common/adam_update.wgsl's arithmetic, so each value is the
//! unfused kernel's. Each tensor's length is its buffer's (the engine binds exact ranges).
//!
//! For two tensors the body reads:
//! ```text
//! var i = element_index(workgroup_id, num_workgroups, local_index);
//! if i < arrayLength(&param0) { update_element0(i); return; }
//! i -= arrayLength(&param0);
//! if i < arrayLength(&param1) { update_element1(i); return; }
//! ```

use std::fmt::Write;

/// The full source of the group kernel for `tensors` tensors, with the snippets it includes.
pub fn adam_group_source(tensors: usize, snippets: &[(&str, &str)]) -> String {
    let mut source = String::new();
    for (name, snippet) in snippets {
        let _ = writeln!(source, "// ---- {name} ----\n{snippet}");
    }
    let _ = writeln!(
        source,
        "// ---- adam_group ({tensors} tensors, written by src/engine/gpu/adam_group.rs) ----"
    );
    source.push_str("@group(0) @binding(0) var<uniform> adam_params: AdamParams;\n");
    for t in 0..tensors {
        let first = 3 * t + 1;
        for (offset, name) in ["param", "first_moment", "second_moment"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                source,
                "@group(0) @binding({}) var<storage, read_write> {name}{t}: array<f32>;",
                first + offset
            );
        }
    }
    for t in 0..tensors {
        let _ = writeln!(
            source,
            "@group(0) @binding({}) var<storage, read> grad{t}: array<f32>;",
            3 * tensors + 1 + t
        );
    }
    for t in 0..tensors {
        let _ = writeln!(
            source,
            "
fn update_element{t}(i: u32) {{
    let updated = adam_update(param{t}[i], first_moment{t}[i], second_moment{t}[i], grad{t}[i]);
    param{t}[i] = updated.x;
    first_moment{t}[i] = updated.y;
    second_moment{t}[i] = updated.z;
}}"
        );
    }
    source.push_str(
        "
@compute @workgroup_size(256)
fn adam_group(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    var i = element_index(workgroup_id, num_workgroups, local_index);
",
    );
    for t in 0..tensors {
        let _ = writeln!(
            source,
            "    if i < arrayLength(&param{t}) {{ update_element{t}(i); return; }}"
        );
        if t + 1 < tensors {
            let _ = writeln!(source, "    i -= arrayLength(&param{t});");
        }
    }
    source.push_str("}\n");
    source
}
