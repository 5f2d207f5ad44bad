//! The benchmark harness that runs where criterion cannot: in the browser, inside the app, and
//! natively through `specdef bench`, with one result schema (`specdef.bench/1`) so figures from
//! any two platforms sit side by side. Criterion (benches/) remains the native reference.
//!
//! A sample runs a prepared workload some number of times back to back and reads one value back,
//! timed by the wall clock (`performance.now()` in the browser): in a browser that is the only
//! clock there is, and reading back is what makes the work observable. Repeats per sample are
//! calibrated during warm-up so one sample lasts long enough for the clock's coarseness and the
//! polling of the readback not to matter.

mod harness;
mod record;
mod workload;

pub use harness::{BenchSession, BenchSettings, run_blocking};
pub use record::{BENCH_SCHEMA, BenchRecord, to_json_lines};
pub use workload::{
    AttackShape, BENCH_LR, Derivative, Prepared, STEPS_PER_RUN, Suite, Workload, attack_batch,
    attack_losses, attack_model, prepare_attack_steps, prepare_attack_steps_of, prepare_derivative,
};
