//! The command line's larger commands, one file per family.

pub mod bench;
pub mod curvature;
pub mod embed;
pub mod gpu_costs;
pub mod report;
pub mod sweep;
pub mod transformer;
pub mod transformer_demo;
pub mod transformer_run;
pub mod verify;
