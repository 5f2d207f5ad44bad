//! Forward passes for evaluation: logits of a model on a set of inputs, blocking or, for frame
//! loops, as a readback to poll.

use super::{DeviceModel, HostModel, Workspace, graph};
use crate::engine::{Engine, EngineError, ReadTicket, Recording};

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

/// A forward pass in flight; its tensors are freed when the logits are taken.
pub struct PendingPredict {
    workspace: Workspace,
    /// The model, when this prediction uploaded it.
    uploaded: Option<DeviceModel>,
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
        let ticket = (|| {
            engine.upload(workspace.inputs, inputs)?;
            let mut rec = Recording::new();
            graph::forward(&mut rec, model, &workspace)?;
            engine.run(&rec)?;
            engine.begin_read(&[workspace.logits()])
        })();
        match ticket {
            Ok(ticket) => Ok(Self {
                workspace,
                uploaded: None,
                ticket,
            }),
            Err(e) => {
                workspace.free(engine);
                Err(e)
            }
        }
    }

    /// Uploads a host model for the purpose and starts its forward pass.
    pub fn start(
        engine: &mut dyn Engine,
        model: &HostModel,
        inputs: &[f64],
    ) -> Result<Self, EngineError> {
        let device = DeviceModel::upload(engine, model)?;
        match Self::start_device(engine, &device, inputs) {
            Ok(mut pending) => {
                pending.uploaded = Some(device);
                Ok(pending)
            }
            Err(e) => {
                device.free(engine);
                Err(e)
            }
        }
    }

    /// The logits (`rows x outputs`, row-major) once there.
    pub fn poll(
        &mut self,
        engine: &mut dyn Engine,
        block: bool,
    ) -> Result<Option<Vec<f64>>, EngineError> {
        let Some(mut values) = take_read(engine, &mut self.ticket, block)? else {
            return Ok(None);
        };
        self.workspace.free(engine);
        if let Some(device) = self.uploaded.take() {
            device.free(engine);
        }
        Ok(Some(values.remove(0)))
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
