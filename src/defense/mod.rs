//! Defences that rewrite a released model: SpecDef and its no-compensation ablation, as one
//! value (`Defense`) that targets and records carry.

mod layers;
mod specdef;
mod value;

pub use layers::LayerSelection;
pub use specdef::{
    CompensationForm, DefenseError, F64_COMPENSATION_BOUND, SpecDef, function_preservation,
    relative_errors,
};
pub use value::Defense;
