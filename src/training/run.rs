//! A training run driven one submission at a time: each submission records a chunk of steps and
//! starts reading back what the chunk measured; nothing blocks unless asked to, so a UI frame can
//! drive a run (in the browser, GPU readbacks finish only between frames). The plain loop
//! (`TrainSession`) and TAR's meta-learning loop (`TamperSession`) share this driving.

use super::{Curve, TrainOutcome};
use crate::engine::{Engine, EngineError, ReadTicket};

/// A training run as its driver sees it.
pub trait TrainRun {
    fn is_finished(&self) -> bool;

    /// What the run has measured so far (all of it once finished).
    fn outcome(&self) -> &TrainOutcome;

    /// One non-blocking move: takes the values of the submission in flight if they are there,
    /// and submits the next one if the run goes on. Returns whether anything happened.
    fn advance(&mut self, engine: &mut dyn Engine) -> Result<bool, EngineError>;

    /// Runs to the end, blocking on each readback.
    fn run_to_end(&mut self, engine: &mut dyn Engine) -> Result<(), EngineError>;

    /// What the run measured beyond its loss and accuracy, in a line (for the run's notes).
    fn summary(&self) -> Option<String> {
        None
    }

    /// Its curves: the training loss, the evaluation accuracy, then any of its own.
    fn curves(&self) -> Vec<Curve>;
}

/// What a run does per submission; every such run is a `TrainRun`, driven by `advance` and
/// `run_to_end` below.
pub(super) trait Chunked {
    fn finished(&self) -> bool;
    fn outcome(&self) -> &TrainOutcome;
    /// As `TrainRun::summary`.
    fn summary(&self) -> Option<String> {
        None
    }
    /// The curves of its own, beyond the loss and the evaluation accuracy.
    fn own_curves(&self) -> Vec<Curve> {
        Vec::new()
    }
    /// The readback of the submission in flight, if any.
    fn in_flight(&mut self) -> &mut Option<ReadTicket>;
    /// Records and submits the next chunk, leaving its readback in flight.
    fn submit_chunk(&mut self, engine: &mut dyn Engine) -> Result<(), EngineError>;
    /// Takes a chunk's read-back values into the outcome.
    fn receive(&mut self, values: Vec<Vec<f64>>);
}

impl<T: Chunked> TrainRun for T {
    fn is_finished(&self) -> bool {
        self.finished()
    }

    fn outcome(&self) -> &TrainOutcome {
        Chunked::outcome(self)
    }

    fn advance(&mut self, engine: &mut dyn Engine) -> Result<bool, EngineError> {
        advance(self, engine)
    }

    fn run_to_end(&mut self, engine: &mut dyn Engine) -> Result<(), EngineError> {
        run_to_end(self, engine)
    }

    fn summary(&self) -> Option<String> {
        Chunked::summary(self)
    }

    fn curves(&self) -> Vec<Curve> {
        let outcome = Chunked::outcome(self);
        let mut curves = vec![
            Curve::new("loss", outcome.loss_curve.iter().copied()),
            Curve::new("eval_accuracy", outcome.accuracy_curve.iter().copied()),
        ];
        curves.extend(self.own_curves());
        curves
    }
}

fn advance(run: &mut impl Chunked, engine: &mut dyn Engine) -> Result<bool, EngineError> {
    if let Some(ticket) = run.in_flight() {
        match engine.poll_read(ticket)? {
            None => return Ok(false),
            Some(values) => {
                *run.in_flight() = None;
                run.receive(values);
            }
        }
    }
    if !run.finished() {
        run.submit_chunk(engine)?;
    }
    Ok(true)
}

fn run_to_end(run: &mut impl Chunked, engine: &mut dyn Engine) -> Result<(), EngineError> {
    while !run.finished() {
        let mut ticket = match run.in_flight().take() {
            Some(ticket) => ticket,
            None => {
                run.submit_chunk(engine)?;
                (run.in_flight().take()).expect("a submission starts a readback")
            }
        };
        let values = engine.wait_read(&mut ticket)?;
        run.receive(values);
    }
    Ok(())
}
