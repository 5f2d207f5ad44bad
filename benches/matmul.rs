//! GFLOP/s of the WGSL matmul on the current adapter, in each tile configuration (64x64 and
//! 128x128, `wgsl_64` and `wgsl_128`; the engine picks one by shape, `MatmulTile::for_shape`),
//! beside faer's f32 matmul on the CPU (sequential and on all cores), at 256, 1024 and 2048
//! square. Throughput counts 2MNK flops.
//!
//!     cargo bench --bench matmul
//!
//! Each GPU iteration submits one matmul and waits for the device; inputs stay on the GPU.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faer::{Accum, Mat, Par};
use specdef::engine::Allocation;
use specdef::engine::gpu::GpuEngine;
use specdef::engine::gpu::lower::MatmulTile;
use specdef::selftest::seeded_uniform;
use specdef::{Engine, Recording};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 3] = [256, 1024, 2048];

fn faer_matrix(n: usize, seed: u64) -> Mat<f32> {
    let values = seeded_uniform(seed, n * n, 1.0);
    Mat::from_fn(n, n, |i, j| values[i * n + j] as f32)
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    match GpuEngine::new() {
        Ok(mut gpu) => {
            println!("GPU: {}", gpu.info());
            for n in SIZES {
                // Freed when `owner` is dropped, at the end of each size.
                let mut owner = Allocation::new(&gpu);
                let a = (owner.tensor_from(&mut gpu, "a", n, n, &seeded_uniform(1, n * n, 1.0)))
                    .unwrap();
                let b = (owner.tensor_from(&mut gpu, "b", n, n, &seeded_uniform(2, n * n, 1.0)))
                    .unwrap();
                let out = owner.alloc(&mut gpu, "c", n, n).unwrap();
                let mut rec = Recording::new();
                rec.matmul(a, b, out, false, false).unwrap();
                group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
                for tile in [MatmulTile::Small, MatmulTile::Large] {
                    gpu.set_matmul_tile(Some(tile));
                    let name = format!("wgsl_{}", tile.side());
                    group.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                        bench.iter(|| {
                            gpu.run(&rec).unwrap();
                            gpu.wait_idle().unwrap();
                        })
                    });
                }
                gpu.set_matmul_tile(None);
            }
        }
        Err(e) => println!("GPU: skipped ({e})"),
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("CPU: faer f32, sequential and on {threads} threads");
    for n in SIZES {
        let a = faer_matrix(n, 1);
        let b = faer_matrix(n, 2);
        let mut out = Mat::<f32>::zeros(n, n);
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        for (name, par) in [
            ("faer_f32_seq", Par::Seq),
            ("faer_f32_par", Par::rayon(threads)),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                bench.iter(|| {
                    faer::linalg::matmul::matmul(
                        out.as_mut(),
                        Accum::Replace,
                        a.as_ref(),
                        b.as_ref(),
                        1.0f32,
                        par,
                    );
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
