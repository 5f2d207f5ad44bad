//! Models: deep linear networks and MLPs whose layers are data (`layer.rs`: a chain of linear
//! factors with roles, optional LoRA branches, a bias). `HostModel` holds the weights in f64 on
//! the host (initialisation, defences, adaptive attacks, model files); `DeviceModel` holds them
//! on an engine, where `graph` records forward, loss and backward.

mod device;
pub mod file;
pub mod graph;
mod host;
mod hvp;
pub mod layer;
mod layer_norm;
mod predict;
mod spec;
pub mod spectrum;

pub use device::{DeviceLayer, DeviceModel, FactorBuffers, Gradients, LayerBuffers, Workspace};
pub use host::{HostFactor, HostLayer, HostModel, Matrix};
pub use hvp::{HessianVectorProduct, Loss};
pub use layer::{
    FactorOf, FactorRole, LayerOf, LoraOf, ParamGroup, ParamKey, ParamRole, Shaped, Trainable,
};
pub use layer_norm::LayerNorm;
pub use predict::{PendingPredict, predict, predict_device, take_read};
pub use spec::{ActivationChoice, ModelSpec};
pub use spectrum::{
    Lanczos, LanczosSettings, PowerIteration, PowerSettings, SpectrumError, TraceEstimate,
    TraceSettings, hutchinson_trace, lanczos, power_iteration, preconditioned_power_iteration,
    rademacher_probes,
};
