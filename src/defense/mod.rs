//! Defences that rewrite a released model: SpecDef and its no-compensation ablation.

mod layers;
mod specdef;

pub use layers::LayerSelection;
pub use specdef::{
    CompensationForm, DefenseError, F64_COMPENSATION_BOUND, SpecDef, function_preservation,
    relative_errors,
};
