//! Forward passes for evaluation: logits of a model on a set of inputs, blocking or, for frame
//! loops, as a readback to poll.

use super::{DeviceModel, HostModel, Workspace, graph};
use crate::engine::{Engine, EngineError, Owned, ReadTicket, Recording};

/// Polls a ticket, or waits for it when `block` (native only for the GPU).
pub fn take_read(
    engine: &mut dyn Engine,
    ticket: &mut ReadTicket,
    block: bool,
) -> Result<Option<Vec<Vec<f64>>>, EngineError> {
    if block {
        engine.wait_read(ticket).map(Some)
    } else {
        engine.poll_read(ticket)
    }
}

/// A forward pass in flight; its tensors are freed when it is dropped.
pub struct PendingPredict {
    _workspace: Owned<Workspace>,
    /// The model, when this prediction uploaded it.
    _uploaded: Option<Owned<DeviceModel>>,
    ticket: ReadTicket,
}

impl PendingPredict {
    /// Runs the forward pass of a model already on the engine and starts reading the logits.
    pub fn start_device(
        engine: &mut dyn Engine,
        model: &DeviceModel,
        inputs: &[f64],
    ) -> Result<Self, EngineError> {
        let rows = inputs.len() / model.spec.widths[0];
        let workspace = Workspace::alloc(engine, model, rows, 1)?;
        engine.upload(workspace.inputs, inputs)?;
        let mut rec = Recording::new();
        graph::forward(&mut rec, model, &workspace)?;
        engine.run(&rec)?;
        let ticket = engine.begin_read(&[workspace.logits()])?;
        Ok(Self {
            _workspace: workspace,
            _uploaded: None,
            ticket,
        })
    }

    /// Uploads a host model for the purpose and starts its forward pass.
    pub fn start(
        engine: &mut dyn Engine,
        model: &HostModel,
        inputs: &[f64],
    ) -> Result<Self, EngineError> {
        let device = DeviceModel::upload(engine, model)?;
        let mut pending = Self::start_device(engine, &device, inputs)?;
        pending._uploaded = Some(device);
        Ok(pending)
    }

    /// The logits (`rows x outputs`, row-major) once there.
    pub fn poll(
        &mut self,
        engine: &mut dyn Engine,
        block: bool,
    ) -> Result<Option<Vec<f64>>, EngineError> {
        Ok(take_read(engine, &mut self.ticket, block)?.map(|mut values| values.remove(0)))
    }
}

/// Logits of a model already on the engine, blocking.
pub fn predict_device(
    engine: &mut dyn Engine,
    model: &DeviceModel,
    inputs: &[f64],
) -> Result<Vec<f64>, EngineError> {
    let mut pending = PendingPredict::start_device(engine, model, inputs)?;
    Ok(pending.poll(engine, true)?.expect("a blocking poll yields"))
}

/// Logits of a host model, uploaded for the purpose, blocking.
pub fn predict(
    engine: &mut dyn Engine,
    model: &HostModel,
    inputs: &[f64],
) -> Result<Vec<f64>, EngineError> {
    let mut pending = PendingPredict::start(engine, model, inputs)?;
    Ok(pending.poll(engine, true)?.expect("a blocking poll yields"))
}
