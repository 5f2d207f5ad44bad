//! The WGSL of two independent tile products in one dispatch (the fusion of
//! src/engine/fusion/product_pair.rs): workgroups `0..tiles_0` compute the first product's tiles,
//! the rest the second's, so two products that do not wait for each other cost one dispatch and
//! one barrier instead of two.
//!
//! Each product is one of three kinds, the products that linear.wgsl and matmul.wgsl compute:
//! a plain `C = alpha op(A) op(B)`, a layer's weight and bias gradients `[C | C2^T] = alpha A^T
//! [B | aux]`, and a layer's input gradient `C = alpha A op(B)`, `C2 = C * f'(aux)`. A kind fixes
//! the product's bindings (three or five buffers), so three kinds make nine modules; its
//! transpositions and activation are pipeline constants, and its shape and alpha the params
//! slot's. The tiling is common/matmul_tile.wgsl's, copied once per product with the product's
//! loads (WGSL has no function pointers), so each value is computed as the kernel the product
//! replaces computes it, and no load picks its buffer or its product's params at run time.

use crate::engine::Activation;
use bytemuck::{Pod, Zeroable};
use std::fmt::Write;

/// The products a pair may hold. The kind fixes the product's bindings (three or five
/// buffers); its transpositions and activation are pipeline constants (`TRANS_A_0`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProductKind {
    /// `C = alpha op(A) op(B)` (a recorded matmul with beta = 0): c; a, b.
    Matmul { trans_a: bool, trans_b: bool },
    /// `[C | C2^T] = alpha A^T [B | aux]`: the weight and bias gradients; c, c2; a, b, aux.
    WeightGrad,
    /// `C = alpha A op(B)`, `C2 = C * f'(aux)`: the input gradient through an activation; c, c2;
    /// a, b, aux.
    InputGrad {
        trans_b: bool,
        activation: Activation,
    },
}

impl ProductKind {
    /// Every kind with every setting of its constants.
    pub fn all() -> Vec<ProductKind> {
        let mut all = vec![ProductKind::WeightGrad];
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                all.push(ProductKind::Matmul { trans_a, trans_b });
            }
            for activation in Activation::ALL {
                all.push(ProductKind::InputGrad {
                    trans_b: trans_a,
                    activation,
                });
            }
        }
        all
    }

    pub fn name(self) -> &'static str {
        match self {
            ProductKind::Matmul { .. } => "matmul",
            ProductKind::WeightGrad => "weight_grad",
            ProductKind::InputGrad { .. } => "input_grad",
        }
    }

    /// The name with its constants, as pipeline labels show it (`matmul_tn`, `input_grad_nt_relu`).
    pub fn label(self) -> String {
        let t = |transposed: bool| if transposed { 't' } else { 'n' };
        match self {
            ProductKind::Matmul { trans_a, trans_b } => {
                format!("matmul_{}{}", t(trans_a), t(trans_b))
            }
            ProductKind::WeightGrad => "weight_grad".to_string(),
            ProductKind::InputGrad {
                trans_b,
                activation,
            } => format!("input_grad_n{}_{}", t(trans_b), activation.name()),
        }
    }

    /// Whether it binds c2 and aux besides c, a and b.
    fn binds_aux(self) -> bool {
        !matches!(self, ProductKind::Matmul { .. })
    }

    /// Read-write buffers it binds.
    pub fn outputs(self) -> usize {
        if self.binds_aux() { 2 } else { 1 }
    }

    /// Read-only buffers it binds.
    pub fn inputs(self) -> usize {
        if self.binds_aux() { 3 } else { 2 }
    }

    /// The index of its module among the nine pair modules (its constants aside).
    pub fn module_index(self) -> u8 {
        match self {
            ProductKind::Matmul { .. } => 0,
            ProductKind::WeightGrad => 1,
            ProductKind::InputGrad { .. } => 2,
        }
    }

    /// Its pipeline constants as product `p` (0 or 1) of a pair.
    pub fn constants(self, p: usize) -> Vec<(&'static str, u8)> {
        const NAMES: [[&str; 3]; 2] = [
            ["TRANS_A_0", "TRANS_B_0", "ACTIVATION_0"],
            ["TRANS_A_1", "TRANS_B_1", "ACTIVATION_1"],
        ];
        let [trans_a_name, trans_b_name, activation_name] = NAMES[p];
        let flag = u8::from;
        let (trans_a, trans_b) = match self {
            ProductKind::Matmul { trans_a, trans_b } => (trans_a, trans_b),
            ProductKind::WeightGrad => (true, false),
            ProductKind::InputGrad { trans_b, .. } => (false, trans_b),
        };
        let mut constants = vec![(trans_a_name, flag(trans_a)), (trans_b_name, flag(trans_b))];
        if let ProductKind::InputGrad { activation, .. } = self {
            constants.push((activation_name, activation.code()));
        }
        constants
    }
}

/// The params of one product (`PRODUCT_PARAMS_WGSL`'s struct; tests/shader_validation.rs checks
/// the two against each other).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct ProductParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub b_cols: u32,
    pub alpha: f32,
    pub tiles_n: u32,
    pub tiles: u32,
    pub _pad: u32,
}

/// The params of one product: eight words, two products to a slot.
pub const PRODUCT_PARAMS_WGSL: &str = "
struct ProductParams {
    m: u32,
    n: u32,
    k: u32,
    // B's columns as stored; n is one more where the weight gradient appends aux.
    b_cols: u32,
    alpha: f32,
    // Tiles per row of the result, and in all.
    tiles_n: u32,
    tiles: u32,
    _pad: u32,
}

struct PairParams {
    product: array<ProductParams, 2>,
}

@group(0) @binding(0) var<uniform> params: PairParams;
";

/// The full source of the pair kernel for `first` then `second`, after the snippets it
/// includes (the common ones and common/activation.wgsl, whose functions it calls) and with
/// `tile_snippet` (common/matmul_tile.wgsl) copied per product.
pub fn product_pair_source(
    (first, second): (ProductKind, ProductKind),
    snippets: &[(&str, &str)],
    tile_snippet: &str,
) -> String {
    let mut source = String::new();
    for (name, snippet) in snippets {
        let _ = writeln!(source, "// ---- {name} ----\n{snippet}");
    }
    let _ = writeln!(
        source,
        "// ---- product_pair ({} + {}, written by src/engine/gpu/product_pair.rs) ----",
        first.label(),
        second.label()
    );
    source.push_str(PRODUCT_PARAMS_WGSL);
    // The tile constants and workgroup memory once; the tile function once per product, with
    // the product's loads and transpositions.
    let split = tile_snippet
        .find("fn tile_product(")
        .expect("common/matmul_tile.wgsl defines tile_product");
    source.push_str(&tile_snippet[..split]);
    let mut next_output = 1;
    let mut next_input = 1 + first.outputs() + second.outputs();
    for (p, kind) in [first, second].into_iter().enumerate() {
        let mut bind = |name: &str, output: bool| {
            let (binding, access) = if output {
                next_output += 1;
                (next_output - 1, "read_write")
            } else {
                next_input += 1;
                (next_input - 1, "read")
            };
            let _ = writeln!(
                source,
                "@group(0) @binding({binding}) var<storage, {access}> {name}_{p}: array<f32>;"
            );
        };
        bind("c", true);
        if kind.binds_aux() {
            bind("c2", true);
        }
        bind("a", false);
        bind("b", false);
        if kind.binds_aux() {
            bind("aux", false);
        }
        source.push_str(&product_functions(p, kind));
        let tile_function = tile_snippet[split..]
            .replace("fn tile_product(", &format!("fn tile_product_{p}("))
            .replace("load_a(", &format!("load_a_{p}("))
            .replace("load_b(", &format!("load_b_{p}("))
            .replace("TRANS_A", &format!("TRANS_A_{p}"))
            .replace("TRANS_B", &format!("TRANS_B_{p}"));
        source.push_str(&tile_function);
    }
    source.push_str(ENTRY_POINT);
    source
}

/// Product `p`'s constants, loads, epilogue and the function that computes one of its tiles.
fn product_functions(p: usize, kind: ProductKind) -> String {
    let activation = if matches!(kind, ProductKind::InputGrad { .. }) {
        format!("override ACTIVATION_{p}: u32 = 0u;\n")
    } else {
        String::new()
    };
    // The weight gradient reads aux as B's last column.
    let aux_column = if kind == ProductKind::WeightGrad {
        format!("    if col >= q.b_cols {{\n        return aux_{p}[kk];\n    }}\n")
    } else {
        String::new()
    };
    let store = match kind {
        ProductKind::Matmul { .. } => format!("    c_{p}[row * q.n + col] = value;\n"),
        ProductKind::WeightGrad => format!(
            "    if col < q.b_cols {{\n        c_{p}[row * q.b_cols + col] = value;\n    }} else {{\n        c2_{p}[row] = value;\n    }}\n"
        ),
        ProductKind::InputGrad { .. } => format!(
            "    let index = row * q.n + col;\n    c_{p}[index] = value;\n    c2_{p}[index] = value * activation_derivative(ACTIVATION_{p}, aux_{p}[index]);\n"
        ),
    };
    format!(
        "
override TRANS_A_{p}: bool = false;
override TRANS_B_{p}: bool = false;
{activation}
fn load_a_{p}(row: u32, kk: u32) -> f32 {{
    let q = params.product[{p}];
    if row >= q.m || kk >= q.k {{
        return 0.0;
    }}
    if TRANS_A_{p} {{
        return a_{p}[kk * q.m + row];
    }}
    return a_{p}[row * q.k + kk];
}}

fn load_b_{p}(kk: u32, col: u32) -> f32 {{
    let q = params.product[{p}];
    if kk >= q.k || col >= q.n {{
        return 0.0;
    }}
{aux_column}    if TRANS_B_{p} {{
        return b_{p}[col * q.k + kk];
    }}
    return b_{p}[kk * q.b_cols + col];
}}

fn store_{p}(row: u32, col: u32, value: f32) {{
    let q = params.product[{p}];
{store}}}

fn product_tile_{p}(tile: u32, local_id: vec3<u32>, local_index: u32) {{
    let q = params.product[{p}];
    let row0 = (tile / q.tiles_n) * TILE_M;
    let col0 = (tile % q.tiles_n) * TILE_N;
    let acc = tile_product_{p}(row0, col0, q.k, local_id, local_index);
    for (var i = 0u; i < BLOCK; i++) {{
        for (var j = 0u; j < BLOCK; j++) {{
            let row = row0 + local_id.y + i * SIDE;
            let col = col0 + local_id.x + j * SIDE;
            if row < q.m && col < q.n {{
                store_{p}(row, col, q.alpha * acc[i][j]);
            }}
        }}
    }}
}}
"
    )
}

/// Which product a workgroup works on depends on its id only, so every invocation of a
/// workgroup takes the same branch (the tile loop's barriers stay in uniform control flow).
const ENTRY_POINT: &str = "
@compute @workgroup_size(16, 16)
fn product_pair(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let tile = flat_workgroup_id(workgroup_id, num_workgroups);
    let first_tiles = params.product[0].tiles;
    if tile < first_tiles {
        product_tile_0(tile, local_id, local_index);
    } else if tile < first_tiles + params.product[1].tiles {
        product_tile_1(tile - first_tiles, local_id, local_index);
    }
}
";
