//! Models: deep linear networks and MLPs built from `Linear` and `DefendedLinear` layers.
//! `HostModel` holds the weights in f64 on the host (initialisation, the defence, model files);
//! `DeviceModel` holds them on an engine, where `graph` records forward, loss and backward.

mod device;
pub mod file;
pub mod graph;
mod host;
mod predict;
mod spec;

pub use device::{DeviceModel, Gradients, Trainable, Workspace};
pub use host::{HostLayer, HostModel, Matrix};
pub use predict::{PendingPredict, predict, predict_device, take_read};
pub use spec::{ActivationChoice, ModelSpec};
