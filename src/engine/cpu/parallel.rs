//! The CPU engine's worker threads. A recording runs inside a rayon pool of `threads` workers,
//! and matrix products large enough to pay for it are split over them by faer. faer splits a
//! product by blocks of the output, never along the summed dimension, so every output entry is
//! the same sum in the same order as on one thread: results are bit-identical to the
//! sequential engine whatever the thread count (tested in `tests/cpu_threads.rs`).
//!
//! Flushing subnormals (`flush.rs`) is a per-thread mode, so the f32 engine's workers set it when
//! they start and keep it; the f64 engine's workers never set it. Pools are made once per
//! (thread count, flushing) and shared by every engine in the process.
//!
//! In WebAssembly there are no threads: the engine is sequential there.

use faer::Par;

/// Products with fewer flops than this stay on one thread: below it the split costs more than
/// it saves (a 128x256x64 product, 4.2 MFLOP, ran 1.3x faster on two cores; a 128x10x256 one,
/// 0.66 MFLOP, 1.03x).
pub const PARALLEL_MIN_FLOP: usize = 2 << 20;

/// Element-wise updates shorter than this stay on one thread.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// The environment variable that sets the CPU engine's thread count (1 = sequential).
pub const THREADS_VARIABLE: &str = "SPECDEF_CPU_THREADS";

/// The most workers `SPECDEF_CPU_THREADS` may ask for: each is an OS thread pinned to a CPU, and
/// tens of thousands took minutes to start. No machine this runs on has more CPUs than this.
pub const MAX_THREADS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workers {
    threads: usize,
}

impl Workers {
    /// `SPECDEF_CPU_THREADS` where set to a positive number, else every core the process may use
    /// (front ends refuse a bad value first, with `check_environment`).
    pub fn from_environment() -> Self {
        let requested = Self::requested().ok().flatten();
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(requested.unwrap_or(available))
    }

    /// An error naming `SPECDEF_CPU_THREADS` where it is set to anything but a whole number from
    /// 1 to `MAX_THREADS`.
    pub fn check_environment() -> Result<(), String> {
        Self::requested().map(|_| ())
    }

    fn requested() -> Result<Option<usize>, String> {
        let Ok(value) = std::env::var(THREADS_VARIABLE) else {
            return Ok(None);
        };
        match value.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{THREADS_VARIABLE}={value:?}: the CPU engine's thread count must be a whole number \
                 from 1 to {MAX_THREADS}"
            )),
        }
    }

    pub fn new(threads: usize) -> Self {
        let threads = if cfg!(target_arch = "wasm32") {
            1
        } else {
            threads.max(1)
        };
        Self { threads }
    }

    pub fn threads(self) -> usize {
        self.threads
    }

    /// How faer should run an `m x n x k` product.
    pub fn matmul_par(self, (m, n, k): (usize, usize, usize)) -> Par {
        if self.threads > 1 && 2 * m * n * k >= PARALLEL_MIN_FLOP {
            par_over(self.threads)
        } else {
            Par::Seq
        }
    }

    /// Splits an update of parameters and two state arrays from a gradient (Adam's shape) into
    /// one chunk per worker where the arrays are long enough; each element is computed as on
    /// one thread.
    pub fn update_in_chunks<T: Send + Sync>(
        self,
        (param, first, second): (&mut [T], &mut [T], &mut [T]),
        grad: &[T],
        update: impl Fn(&mut [T], &mut [T], &mut [T], &[T]) + Sync,
    ) {
        if self.threads == 1 || param.len() < PARALLEL_MIN_ELEMENTS {
            return update(param, first, second, grad);
        }
        update_chunks_on_workers(self.threads, (param, first, second), grad, update);
    }

    /// Runs `work` on the workers (flushing subnormals there where `flush`), or here when there
    /// is one thread.
    pub fn run<R: Send>(self, flush: bool, work: impl FnOnce() -> R + Send) -> R {
        if self.threads == 1 {
            let _flush = flush.then(super::flush::FlushSubnormals::enable);
            return work();
        }
        run_on_pool(self.threads, flush, work)
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn par_over(threads: usize) -> Par {
    Par::rayon(threads)
}

#[cfg(target_arch = "wasm32")]
fn par_over(_threads: usize) -> Par {
    Par::Seq
}

#[cfg(not(target_arch = "wasm32"))]
fn update_chunks_on_workers<T: Send + Sync>(
    threads: usize,
    (param, first, second): (&mut [T], &mut [T], &mut [T]),
    grad: &[T],
    update: impl Fn(&mut [T], &mut [T], &mut [T], &[T]) + Sync,
) {
    use rayon::prelude::*;
    let chunk = param.len().div_ceil(threads);
    param
        .par_chunks_mut(chunk)
        .zip(first.par_chunks_mut(chunk))
        .zip(second.par_chunks_mut(chunk))
        .zip(grad.par_chunks(chunk))
        .for_each(|(((p, a), b), g)| update(p, a, b, g));
}

#[cfg(target_arch = "wasm32")]
fn update_chunks_on_workers<T: Send + Sync>(
    _threads: usize,
    (param, first, second): (&mut [T], &mut [T], &mut [T]),
    grad: &[T],
    update: impl Fn(&mut [T], &mut [T], &mut [T], &[T]) + Sync,
) {
    update(param, first, second, grad)
}

#[cfg(not(target_arch = "wasm32"))]
fn run_on_pool<R: Send>(threads: usize, flush: bool, work: impl FnOnce() -> R + Send) -> R {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Pools = Mutex<HashMap<(usize, bool), &'static rayon::ThreadPool>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let pool = {
        let mut pools = POOLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match pools.get(&(threads, flush)) {
            Some(&pool) => Some(pool),
            None => {
                let built = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("specdef-cpu-{i}"))
                    .start_handler(move |index| {
                        pin_to_own_cpu(index, threads);
                        if flush {
                            // Kept for the thread's life: the pool's threads run nothing else.
                            std::mem::forget(super::flush::FlushSubnormals::enable());
                        }
                    })
                    .build();
                // One pool per (threads, flush) for the process's life, like rayon's global
                // pool. A system that cannot start threads gets the sequential engine.
                built.ok().map(|pool| {
                    let pool: &'static rayon::ThreadPool = Box::leak(Box::new(pool));
                    pools.insert((threads, flush), pool);
                    pool
                })
            }
        }
    };
    match pool {
        Some(pool) => pool.install(work),
        None => {
            let _flush = flush.then(super::flush::FlushSubnormals::enable);
            work()
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn run_on_pool<R: Send>(_threads: usize, flush: bool, work: impl FnOnce() -> R + Send) -> R {
    let _flush = flush.then(super::flush::FlushSubnormals::enable);
    work()
}

/// Keeps worker `index` on the index-th CPU this process may use, when there is one for each
/// worker. Unpinned, Linux tends to wake a worker on the CPU of the worker that woke it (it
/// expects them to share data), and then the two halves of a product run one after another
/// on one core: two threads measured 0.8x one thread's steps/s in about half the processes.
#[cfg(target_os = "linux")]
fn pin_to_own_cpu(index: usize, threads: usize) {
    // SAFETY: cpu_set_t is plain data; the libc calls read and write only the set passed.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &allowed))
            .collect();
        if cpus.len() < threads {
            return;
        }
        let mut own: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[index], &mut own);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &own);
    }
}

#[cfg(all(not(target_os = "linux"), not(target_arch = "wasm32")))]
fn pin_to_own_cpu(_index: usize, _threads: usize) {}
