//! The CPU engine: executes recordings with the CPU twin of every WGSL kernel, in f64 (the ground
//! truth every GPU result is checked against) or f32.

pub mod damping;
pub mod device_scalar;
pub mod elementwise;
mod flush;
pub mod jacobi;
pub mod matmul;
pub mod optimizer;
mod parallel;
pub mod random;
mod real;
pub mod reduce;
pub mod softmax_cross_entropy;
pub mod transpose;

pub use parallel::{PARALLEL_MIN_FLOP, THREADS_VARIABLE, Workers};
pub use real::CpuReal;

use super::{
    DeviceScalar, Engine, EngineError, EngineInfo, Op, Recording, ReleaseQueue, Tensor, check_alloc,
};
use std::collections::HashMap;

struct Stored<T> {
    label: String,
    values: Vec<T>,
}

pub struct CpuEngine<T: CpuReal> {
    tensors: HashMap<u32, Stored<T>>,
    next_id: u32,
    released: ReleaseQueue,
    workers: Workers,
}

pub type CpuEngine64 = CpuEngine<f64>;

/// The most tensors one op reads (the activation gradient's tangent reads four).
const MAX_INPUTS: usize = 4;
pub type CpuEngine32 = CpuEngine<f32>;

impl<T: CpuReal> Default for CpuEngine<T> {
    fn default() -> Self {
        Self {
            tensors: HashMap::new(),
            next_id: 0,
            released: ReleaseQueue::default(),
            workers: Workers::from_environment(),
        }
    }
}

impl<T: CpuReal> CpuEngine<T> {
    /// An engine on `SPECDEF_CPU_THREADS` threads, or every core (see `parallel.rs`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine on `threads` worker threads (1 = sequential); results do not depend on it.
    pub fn with_threads(threads: usize) -> Self {
        Self {
            workers: Workers::new(threads),
            ..Self::default()
        }
    }

    pub fn threads(&self) -> usize {
        self.workers.threads()
    }

    /// Frees what dropped owners left in the release queue.
    fn collect_released(&mut self) {
        for tensor in self.released.take() {
            self.tensors.remove(&tensor.id());
        }
    }

    fn values(&self, tensor: Tensor) -> Result<&[T], EngineError> {
        self.tensors
            .get(&tensor.id())
            .map(|s| s.values.as_slice())
            .ok_or(EngineError::UnknownTensor { id: tensor.id() })
    }

    /// Moves a tensor's values out (for ops that update several tensors in place).
    fn take(&mut self, tensor: Tensor) -> Result<Vec<T>, EngineError> {
        let stored = self
            .tensors
            .get_mut(&tensor.id())
            .ok_or(EngineError::UnknownTensor { id: tensor.id() })?;
        Ok(std::mem::take(&mut stored.values))
    }

    fn restore(&mut self, tensor: Tensor, values: Vec<T>) {
        if let Some(stored) = self.tensors.get_mut(&tensor.id()) {
            stored.values = values;
        }
    }

    /// Runs `f(inputs, output)` with the output's storage moved out while `f` runs. Recordings
    /// never alias an output with an input (see `Recording`), so the two borrows never overlap.
    fn with_output(
        &mut self,
        out: Tensor,
        inputs: &[Tensor],
        f: impl FnOnce(&[&[T]], &mut [T]),
    ) -> Result<(), EngineError> {
        assert!(
            inputs.len() <= MAX_INPUTS,
            "an op reads at most {MAX_INPUTS} tensors"
        );
        let unknown = EngineError::UnknownTensor { id: out.id() };
        let mut out_values =
            std::mem::take(&mut self.tensors.get_mut(&out.id()).ok_or(unknown)?.values);
        // On the stack: an op reads at most MAX_INPUTS tensors, and this runs for every op.
        let mut input_values: [&[T]; MAX_INPUTS] = [&[]; MAX_INPUTS];
        let found = inputs
            .iter()
            .zip(&mut input_values)
            .try_for_each(|(&t, slot)| self.values(t).map(|values| *slot = values));
        let result = found.map(|()| f(&input_values[..inputs.len()], &mut out_values));
        // Put the output back whether or not the inputs were found.
        if let Some(stored) = self.tensors.get_mut(&out.id()) {
            stored.values = out_values;
        }
        result
    }

    /// Runs `f(value, x, output)` for an op scaled by a device scalar: the inputs are bound as the
    /// shader binds them (x, then num and den, or x again where one is absent).
    fn with_device_scalar(
        &mut self,
        scalar: DeviceScalar,
        x: Tensor,
        out: Tensor,
        f: impl FnOnce(T, &[T], &mut [T]),
    ) -> Result<(), EngineError> {
        let inputs = [x, scalar.num.unwrap_or(x), scalar.den.unwrap_or(x)];
        self.with_output(out, &inputs, |inp, out| {
            let value = device_scalar::device_scalar_value(
                T::of_f64(scalar.coef),
                scalar.num.map(|_| inp[1][0]),
                scalar.den.map(|_| inp[2][0]),
                scalar.sqrt,
            );
            f(value, inp[0], out)
        })
    }

    fn execute(&mut self, op: &Op) -> Result<(), EngineError> {
        match *op {
            Op::Matmul {
                a,
                b,
                c,
                trans_a,
                trans_b,
                alpha,
                beta,
            } => {
                let k = if trans_a { a.rows() } else { a.cols() };
                let par = self.workers.matmul_par((c.rows(), c.cols(), k));
                self.with_output(c, &[a, b], |inp, out| {
                    matmul::matmul(
                        inp[0],
                        inp[1],
                        out,
                        (c.rows(), c.cols(), k),
                        trans_a,
                        trans_b,
                        T::of_f64(alpha),
                        T::of_f64(beta),
                        par,
                    )
                })
            }
            Op::Activate { f, x, y } => {
                self.with_output(y, &[x], |inp, out| elementwise::activate(f, inp[0], out))
            }
            Op::ActivateGrad {
                f,
                x,
                grad_y,
                grad_x,
            } => self.with_output(grad_x, &[x, grad_y], |inp, out| {
                elementwise::activate_grad(f, inp[0], inp[1], out)
            }),
            Op::ActivateGradJvp {
                f,
                x,
                grad_y,
                dx,
                d_grad_y,
                out,
            } => self.with_output(out, &[x, grad_y, dx, d_grad_y], |inp, out| {
                elementwise::activate_grad_jvp(f, inp[0], inp[1], inp[2], inp[3], out)
            }),
            Op::Binary { op, a, b, out } => self.with_output(out, &[a, b], |inp, out| {
                elementwise::binary(op, inp[0], inp[1], out)
            }),
            Op::Scale { alpha, x, out } => self.with_output(out, &[x], |inp, out| {
                elementwise::scale(T::of_f64(alpha), inp[0], out)
            }),
            Op::Axpy { alpha, x, y } => self.with_output(y, &[x], |inp, out| {
                elementwise::axpy(T::of_f64(alpha), inp[0], out)
            }),
            Op::Fill { value, out } => {
                self.with_output(out, &[], |_, out| elementwise::fill(T::of_f64(value), out))
            }
            Op::Reduce {
                reduction,
                axis,
                x,
                out,
            } => self.with_output(out, &[x], |inp, out| {
                reduce::reduce(reduction, axis, inp[0], x.cols(), out)
            }),
            Op::SoftmaxCrossEntropy {
                logits,
                labels,
                loss,
                grad,
                grad_scale,
            } => {
                // Two outputs: compute into a scratch loss, then store it.
                let mut loss_values = vec![T::zero(); loss.len()];
                self.with_output(grad, &[logits, labels], |inp, out| {
                    softmax_cross_entropy::softmax_cross_entropy(
                        inp[0],
                        inp[1],
                        logits.cols(),
                        T::of_f64(grad_scale),
                        &mut loss_values,
                        out,
                    )
                })?;
                self.with_output(loss, &[], |_, out| out.copy_from_slice(&loss_values))
            }
            Op::SoftmaxCrossEntropyJvp {
                logits,
                labels,
                d_logits,
                d_loss,
                d_grad,
                grad_scale,
            } => {
                // Two outputs, as for the loss: a scratch d_loss, stored afterwards.
                let mut d_loss_values = vec![T::zero(); d_loss.len()];
                self.with_output(d_grad, &[logits, labels, d_logits], |inp, out| {
                    softmax_cross_entropy::softmax_cross_entropy_jvp(
                        inp[0],
                        inp[1],
                        inp[2],
                        logits.cols(),
                        T::of_f64(grad_scale),
                        &mut d_loss_values,
                        out,
                    )
                })?;
                self.with_output(d_loss, &[], |_, out| out.copy_from_slice(&d_loss_values))
            }
            Op::AxpyDevice { scalar, x, y } => {
                self.with_device_scalar(scalar, x, y, device_scalar::axpy_device)
            }
            Op::ScaleDevice { scalar, x, out } => {
                self.with_device_scalar(scalar, x, out, device_scalar::scale_device)
            }
            Op::Transpose { x, out } => self.with_output(out, &[x], |inp, out| {
                transpose::transpose(inp[0], x.rows(), x.cols(), out)
            }),
            Op::Momentum {
                param,
                grad,
                velocity,
                lr,
                momentum,
                nesterov,
            } => {
                let mut state = self.take(velocity)?;
                let result = self.with_output(param, &[grad], |inp, out| {
                    optimizer::momentum(
                        out,
                        &mut state,
                        inp[0],
                        T::of_f64(lr),
                        T::of_f64(momentum),
                        nesterov,
                    )
                });
                self.restore(velocity, state);
                result
            }
            Op::JacobiRound { rows, basis, round } => {
                let mut basis_values = self.take(basis)?;
                let result = self.with_output(rows, &[], |_, out| {
                    jacobi::jacobi_round(
                        out,
                        &mut basis_values,
                        rows.rows(),
                        rows.cols(),
                        round as usize,
                    )
                });
                self.restore(basis, basis_values);
                result
            }
            Op::Adam {
                param,
                grad,
                m,
                v,
                hyper,
                step,
            } => {
                let (c1, c2) = hyper.corrections(step);
                let mut m_state = self.take(m)?;
                let mut v_state = match self.take(v) {
                    Ok(state) => state,
                    Err(e) => {
                        self.restore(m, m_state);
                        return Err(e);
                    }
                };
                let workers = self.workers;
                let result = self.with_output(param, &[grad], |inp, out| {
                    let state = (out, m_state.as_mut_slice(), v_state.as_mut_slice());
                    workers.update_in_chunks(state, inp[0], |param, m, v, grad| {
                        optimizer::adam(
                            param,
                            m,
                            v,
                            grad,
                            T::of_f64(hyper.lr),
                            (T::of_f64(hyper.beta1), T::of_f64(hyper.beta2)),
                            T::of_f64(hyper.eps),
                            T::of_f64(hyper.weight_decay),
                            (T::of_f64(c1), T::of_f64(c2)),
                        )
                    })
                });
                self.restore(m, m_state);
                self.restore(v, v_state);
                result
            }
            Op::Unary { op, x, out } => {
                self.with_output(out, &[x], |inp, out| elementwise::unary(op, inp[0], out))
            }
            Op::Ema { beta, x, avg } => self.with_output(avg, &[x], |inp, out| {
                elementwise::ema(T::of_f64(beta), T::of_f64(1.0 - beta), inp[0], out)
            }),
            Op::Rademacher { out, seed, stream } => {
                self.with_output(out, &[], |_, out| random::rademacher(seed, stream, out))
            }
            Op::SampleCategorical {
                logits,
                labels,
                seed,
                stream,
            } => self.with_output(labels, &[logits], |inp, out| {
                random::sample_categorical(inp[0], logits.cols(), seed, stream, out)
            }),
            Op::AdaHessian {
                param,
                grad,
                hess_diag,
                m,
                v,
                hyper,
                step,
            } => {
                let mut m_state = self.take(m)?;
                let mut v_state = match self.take(v) {
                    Ok(state) => state,
                    Err(e) => {
                        self.restore(m, m_state);
                        return Err(e);
                    }
                };
                let result = self.with_output(param, &[grad, hess_diag], |inp, out| {
                    optimizer::adahessian(
                        out,
                        &mut m_state,
                        &mut v_state,
                        inp[0],
                        inp[1],
                        &hyper,
                        step,
                    )
                });
                self.restore(m, m_state);
                self.restore(v, v_state);
                result
            }
            Op::Sophia {
                param,
                grad,
                hess,
                m,
                hyper,
            } => {
                let mut m_state = self.take(m)?;
                let result = self.with_output(param, &[grad, hess], |inp, out| {
                    optimizer::sophia(out, &mut m_state, inp[0], inp[1], &hyper)
                });
                self.restore(m, m_state);
                result
            }
            Op::DampingUpdate {
                lambda,
                actual,
                predicted,
                hyper,
            } => self.with_output(lambda, &[actual, predicted], |inp, out| {
                out[0] = damping::damping_update(out[0], inp[0][0], inp[1][0], &hyper)
            }),
        }
    }
}

impl<T: CpuReal> Engine for CpuEngine<T> {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: T::ENGINE_NAME.to_string(),
            backend: "cpu".to_string(),
            adapter: "host CPU (faer)".to_string(),
            driver: format!(
                "faer, {} bits{}, {} thread{}",
                std::mem::size_of::<T>() * 8,
                if T::FLUSH_SUBNORMALS {
                    ", subnormals flushed"
                } else {
                    ""
                },
                self.workers.threads(),
                if self.workers.threads() == 1 { "" } else { "s" }
            ),
            device_type: "host".to_string(),
        }
    }

    fn alloc(&mut self, label: &str, rows: usize, cols: usize) -> Result<Tensor, EngineError> {
        self.collect_released();
        check_alloc(label, rows, cols)?;
        let id = self.next_id;
        self.next_id += 1;
        self.tensors.insert(
            id,
            Stored {
                label: label.to_string(),
                values: vec![T::zero(); rows * cols],
            },
        );
        Ok(Tensor::new(id, rows, cols))
    }

    fn free(&mut self, tensor: Tensor) {
        self.tensors.remove(&tensor.id());
    }

    fn release_queue(&self) -> ReleaseQueue {
        self.released.clone()
    }

    fn upload(&mut self, tensor: Tensor, values: &[f64]) -> Result<(), EngineError> {
        self.collect_released();
        let stored = self
            .tensors
            .get_mut(&tensor.id())
            .ok_or(EngineError::UnknownTensor { id: tensor.id() })?;
        if values.len() != stored.values.len() {
            return Err(EngineError::UploadLength {
                label: stored.label.clone(),
                got: values.len(),
                expected: stored.values.len(),
            });
        }
        for (dst, &src) in stored.values.iter_mut().zip(values) {
            *dst = T::of_f64(src);
        }
        Ok(())
    }

    fn run(&mut self, recording: &Recording) -> Result<(), EngineError> {
        self.collect_released();
        let workers = self.workers;
        workers.run(T::FLUSH_SUBNORMALS, || {
            recording.ops().iter().try_for_each(|op| self.execute(op))
        })
    }

    fn read(&mut self, tensors: &[Tensor]) -> Result<Vec<Vec<f64>>, EngineError> {
        self.collect_released();
        tensors
            .iter()
            .map(|&t| Ok(self.values(t)?.iter().map(|v| v.as_f64()).collect()))
            .collect()
    }
}
