//! The command line's larger commands, one file per family.

pub mod curvature;
pub mod verify;
