//! Forward passes for evaluation: logits of a model on a set of inputs.

use super::{DeviceModel, HostModel, Workspace, graph};
use crate::engine::{Engine, EngineError, Recording};

/// Logits (`rows x outputs`, row-major) of a model already on the engine.
pub fn predict_device(
    engine: &mut dyn Engine,
    model: &DeviceModel,
    inputs: &[f64],
) -> Result<Vec<f64>, EngineError> {
    let rows = inputs.len() / model.spec.widths[0];
    let ws = Workspace::alloc(engine, model, rows, 1)?;
    engine.upload(ws.inputs, inputs)?;
    let mut rec = Recording::new();
    graph::forward(&mut rec, model, &ws)?;
    let result = engine.run(&rec).and_then(|_| engine.read_one(ws.logits()));
    ws.free(engine);
    result
}

/// Logits of a host model, uploaded for the purpose.
pub fn predict(
    engine: &mut dyn Engine,
    model: &HostModel,
    inputs: &[f64],
) -> Result<Vec<f64>, EngineError> {
    let device = DeviceModel::upload(engine, model)?;
    let result = predict_device(engine, &device, inputs);
    device.free(engine);
    result
}
