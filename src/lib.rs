//! specdef: the SpecDef training-resistance defence and the attacks against it, computed by WGSL
//! compute shaders on wgpu (natively and in the browser) and checked against an f64 CPU reference.
//!
//! The crate is built around one [`engine::Engine`] interface: algorithm code records
//! [`engine::Op`]s into a [`engine::Recording`] and either engine executes it. See ARCHITECTURE.md.

pub mod app;
pub mod atomic_file;
#[cfg(not(target_arch = "wasm32"))]
pub mod atomic_folder;
pub mod attack;
pub mod benchmark;
pub mod compensation_bound;
pub mod curvature;
pub mod data;
pub mod defense;
pub mod encoder;
pub mod engine;
pub mod engine_choice;
pub mod fnv;
pub mod input_file;
pub mod linalg;
pub mod model;
pub mod printable;
pub mod record;
pub mod reference;
pub mod report;
pub mod run_folder;
pub mod scenario;
pub mod selftest;
pub mod stable_step;
pub mod sweep;
pub mod theory;
pub mod tokenizer;
pub mod tolerance;
pub mod training;
pub mod transformer_files;
pub mod transformer_scenario;

pub use engine::{Engine, EngineError, EngineInfo, Recording, Tensor};
pub use tolerance::Tolerance;
