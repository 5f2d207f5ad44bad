//! `specdef bench-gpu`: what the GPU engine itself costs, for tuning it on a GPU (benches/gpu.sh
//! runs it): one dispatch that waits for the one before it against one that does not (a chain of
//! axpys on one tensor against the same number on distinct tensors, in one submission each), and
//! a plain product (matmul.wgsl) at the shape of each product of the default step and the
//! width-2048 step, and 2048^3, in each tile configuration, timed on the device where the adapter
//! has timestamp queries (the wall clock of a run and its wait otherwise). The fused step itself
//! runs its products in linear.wgsl's and the product pairs' 64x64 tiles (its weight gradients
//! one column wider, the bias's); these records time the plain kernel at those shapes. JSON lines
//! out, each record naming the adapter.

use anyhow::{Context, Result};
use serde::Serialize;
use specdef::engine::gpu::GpuEngine;
use specdef::engine::gpu::lower::MatmulTile;
use specdef::engine::{Allocation, Tensor};
use specdef::{Engine, Recording, report};
use std::path::Path;
use web_time::Instant;

pub const SCHEMA: &str = "specdef.gpu_costs/1";

/// The most dispatches one chain may hold (each its own params slot and bind group).
const MAX_DISPATCHES: usize = 100_000;
const MAX_SAMPLES: usize = 1000;

/// The layers' widths and the batch of the steps whose products are timed.
const STEPS: [(&str, &[usize], usize); 2] = [
    ("default", &[64, 256, 256, 10], 128),
    ("width-2048", &[64, 2048, 2048, 10], 128),
];

#[derive(Serialize)]
struct CostRecord {
    schema: &'static str,
    adapter: String,
    backend: String,
    driver: String,
    #[serde(flatten)]
    measure: Measure,
}

#[derive(Serialize)]
#[serde(tag = "measure", rename_all = "snake_case")]
enum Measure {
    /// One submission of `dispatches` axpys over 256 floats: each on the tensor the one before
    /// wrote (`dependent`), or each on its own tensor.
    Dispatches {
        dependent: bool,
        dispatches: usize,
        /// The median over the samples of the run's wall time (recording submitted, device
        /// idle), per dispatch.
        us_per_dispatch: f64,
    },
    Product {
        /// The shape of which product of which step (`default forward 1`, `square`).
        product: String,
        m: usize,
        n: usize,
        k: usize,
        trans_a: bool,
        trans_b: bool,
        /// The tile side of the configuration (64 or 128), its splits of K (1: unsplit), and
        /// whether the engine's rule picks it for a plain product of this shape (fused products
        /// always take unsplit 64x64 tiles).
        tile: usize,
        splits: usize,
        rule_for_plain_product: bool,
        /// Medians over the samples: the device's time of the dispatch (None without timestamp
        /// queries) and the wall time of a run and its wait.
        device_ms: Option<f64>,
        wall_ms: f64,
        /// 2 m n k over the device time where there is one, else over the wall time.
        gflops: f64,
    },
}

/// One product to time.
struct Product {
    name: String,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
}

/// The products of one Adam step of an MLP: per layer (in -> out), the forward `h W^T`, the
/// weight gradient `G^T h` and (below the first layer) the input gradient `G W`.
fn step_products(step: &str, widths: &[usize], batch: usize) -> Vec<Product> {
    let mut products = Vec::new();
    for (layer, pair) in widths.windows(2).enumerate() {
        let (input, output) = (pair[0], pair[1]);
        let mut add = |role: &str, (m, n, k), trans_a, trans_b| {
            products.push(Product {
                name: format!("{step} {role} {layer}"),
                m,
                n,
                k,
                trans_a,
                trans_b,
            })
        };
        add("forward", (batch, output, input), false, true);
        add("weight_grad", (output, input, batch), true, false);
        if layer > 0 {
            add("input_grad", (batch, input, output), false, false);
        }
    }
    products
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn bench_gpu(out: &Path, dispatches: usize, samples: usize, quick: bool) -> Result<()> {
    anyhow::ensure!(
        (1..=MAX_DISPATCHES).contains(&dispatches),
        "--dispatches must be 1..={MAX_DISPATCHES}, got {dispatches}"
    );
    anyhow::ensure!(
        (1..=MAX_SAMPLES).contains(&samples),
        "--samples must be 1..={MAX_SAMPLES}, got {samples}"
    );
    crate::writable(out)?;
    let mut gpu = GpuEngine::new().context("bench-gpu measures the GPU engine")?;
    println!("{}", gpu.info());
    let info = gpu.info();
    let record = |measure| CostRecord {
        schema: SCHEMA,
        adapter: info.adapter.clone(),
        backend: info.backend.clone(),
        driver: info.driver.clone(),
        measure,
    };
    let mut records = Vec::new();
    for dependent in [true, false] {
        let us = dispatch_cost(&mut gpu, dependent, dispatches, samples)?;
        let kind = if dependent {
            "dependent"
        } else {
            "independent"
        };
        println!("  {dispatches} {kind} dispatches: {us:.2} us each");
        records.push(record(Measure::Dispatches {
            dependent,
            dispatches,
            us_per_dispatch: us,
        }));
    }
    let mut products: Vec<Product> = (STEPS.iter())
        .take(if quick { 1 } else { STEPS.len() })
        .flat_map(|&(step, widths, batch)| step_products(step, widths, batch))
        .collect();
    if !quick {
        products.push(Product {
            name: "square".to_string(),
            m: 2048,
            n: 2048,
            k: 2048,
            trans_a: false,
            trans_b: false,
        });
    }
    for product in &products {
        let mut configurations = vec![MatmulTile::Small, MatmulTile::Large];
        let rule = MatmulTile::for_shape(product.m, product.n, product.k);
        if !configurations.contains(&rule) {
            configurations.push(rule);
        }
        for tile in configurations {
            let measure = time_product(&mut gpu, product, tile, samples)?;
            if let Measure::Product {
                device_ms,
                wall_ms,
                gflops,
                ..
            } = &measure
            {
                let device = device_ms.map_or("-".to_string(), |ms| format!("{ms:.4}"));
                println!(
                    "  {} {}x{}x{} {tile:?}: device {device} ms, wall {wall_ms:.4} ms, {gflops:.1} GFLOP/s",
                    product.name, product.m, product.n, product.k,
                );
            }
            records.push(record(measure));
        }
    }
    gpu.set_matmul_tile(None);
    let mut lines = String::new();
    for r in &records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    report::write_atomically(out, lines.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The median wall time per dispatch of one submission of `count` axpys.
fn dispatch_cost(
    gpu: &mut GpuEngine,
    dependent: bool,
    count: usize,
    samples: usize,
) -> Result<f64> {
    let mut owner = Allocation::new(&*gpu);
    let x = owner.alloc(gpu, "x", 1, 256)?;
    let targets: Vec<Tensor> = if dependent {
        vec![owner.alloc(gpu, "y", 1, 256)?]
    } else {
        (0..count)
            .map(|i| owner.alloc(gpu, &format!("y{i}"), 1, 256))
            .collect::<Result<_, _>>()?
    };
    let mut rec = Recording::new();
    for i in 0..count {
        rec.axpy(1.0, x, targets[i % targets.len()])?;
    }
    let seconds = wall_times(gpu, &rec, samples)?;
    Ok(median(seconds) * 1e6 / count as f64)
}

/// `samples` wall times of the recording (run, then wait for the device), after one run that
/// plans it and compiles its pipelines.
fn wall_times(gpu: &mut GpuEngine, rec: &Recording, samples: usize) -> Result<Vec<f64>> {
    gpu.run(rec)?;
    gpu.wait_idle()?;
    (0..samples)
        .map(|_| {
            let start = Instant::now();
            gpu.run(rec)?;
            gpu.wait_idle()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

fn time_product(
    gpu: &mut GpuEngine,
    p: &Product,
    tile: MatmulTile,
    samples: usize,
) -> Result<Measure> {
    gpu.set_matmul_tile(Some(tile));
    let stored = |rows, cols, transposed| {
        if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        }
    };
    let (ar, ac) = stored(p.m, p.k, p.trans_a);
    let (br, bc) = stored(p.k, p.n, p.trans_b);
    let mut owner = Allocation::new(&*gpu);
    let fill = |len: usize| specdef::selftest::seeded_uniform(len as u64, len, 1.0);
    let a = owner.tensor_from(gpu, "a", ar, ac, &fill(ar * ac))?;
    let b = owner.tensor_from(gpu, "b", br, bc, &fill(br * bc))?;
    let c = owner.alloc(gpu, "c", p.m, p.n)?;
    let mut rec = Recording::new();
    rec.matmul(a, b, c, p.trans_a, p.trans_b)?;
    let wall_ms = median(wall_times(gpu, &rec, samples)?) * 1e3;
    let device_ms = if gpu.has_timestamps() {
        let times = (0..samples)
            .map(|_| {
                Ok(gpu
                    .run_timed(&rec)?
                    .iter()
                    .map(|t| t.device_ns)
                    .sum::<f64>())
            })
            .collect::<Result<Vec<f64>>>()?;
        Some(median(times) * 1e-6)
    } else {
        None
    };
    let flop = 2.0 * (p.m * p.n * p.k) as f64;
    let seconds = device_ms.unwrap_or(wall_ms) * 1e-3;
    Ok(Measure::Product {
        product: p.name.clone(),
        m: p.m,
        n: p.n,
        k: p.k,
        trans_a: p.trans_a,
        trans_b: p.trans_b,
        tile: tile.side(),
        splits: match tile {
            MatmulTile::SplitK { splits } => splits,
            _ => 1,
        },
        rule_for_plain_product: MatmulTile::for_shape(p.m, p.n, p.k) == tile,
        device_ms,
        wall_ms,
        gflops: flop / seconds / 1e9,
    })
}
