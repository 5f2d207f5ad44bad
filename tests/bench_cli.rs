//! `specdef bench --export-peer` and `specdef bench-plot` through the command line: the exported
//! files are what the layout says (a naive f64 forward pass over the file's tensors gives the
//! exported first loss), and the cost-curve plot is drawn from records or refuses bad files.

use safetensors::tensor::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("specdef-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn specdef(args: &[&str]) -> Output {
    common::specdef_command(args, &[])
}

use common::succeeded as ok;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn f32_tensor(file: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f64>) {
    let view = file
        .tensor(name)
        .unwrap_or_else(|_| panic!("no tensor {name}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    (view.shape().to_vec(), values)
}

/// Mean cross-entropy of the file's model on its batch, by the layout's own words: each layer
/// is `y = x F0^T F1^T ... + bias`, ReLU between layers.
fn first_loss(file: &SafeTensors, layers: usize) -> f64 {
    let (shape, mut x) = f32_tensor(file, "inputs");
    let (batch, mut width) = (shape[0], shape[1]);
    let labels: Vec<i64> = file
        .tensor("labels")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    for i in 0..layers {
        for j in 0.. {
            let Ok(_) = file.tensor(&format!("layer{i}.factor{j}")) else {
                break;
            };
            let (shape, f) = f32_tensor(file, &format!("layer{i}.factor{j}"));
            let (out, inp) = (shape[0], shape[1]);
            assert_eq!(inp, width, "layer {i} factor {j} takes {inp}, gets {width}");
            let mut y = vec![0.0; batch * out];
            for r in 0..batch {
                for o in 0..out {
                    y[r * out + o] = (0..inp).map(|c| x[r * inp + c] * f[o * inp + c]).sum();
                }
            }
            (x, width) = (y, out);
        }
        let (_, bias) = f32_tensor(file, &format!("layer{i}.bias"));
        for r in 0..batch {
            for o in 0..width {
                x[r * width + o] += bias[o];
                if i + 1 < layers {
                    x[r * width + o] = x[r * width + o].max(0.0);
                }
            }
        }
    }
    let mut total = 0.0;
    for r in 0..batch {
        let row = &x[r * width..(r + 1) * width];
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let log_sum = row.iter().map(|z| (z - max).exp()).sum::<f64>().ln() + max;
        total += log_sum - row[labels[r] as usize];
    }
    total / batch as f64
}

#[test]
fn the_peer_export_holds_the_workloads_a_naive_forward_pass_reproduces() {
    let dir = scratch("export");
    let export = dir.join("peer");
    ok(specdef(&[
        "bench",
        "--export-peer",
        path(&export),
        "--suite",
        "standard",
    ]));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("workloads.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["schema"], "specdef.peer/1");
    let workloads = manifest["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2, "the standard suite's two attack steps");
    for workload in workloads {
        let name = workload["name"].as_str().unwrap();
        let bytes = std::fs::read(export.join(workload["file"].as_str().unwrap())).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let layers = workload["widths"].as_array().unwrap().len() - 1;
        let loss = first_loss(&file, layers);
        let f64_losses = workload["reference_losses_f64"].as_array().unwrap();
        let f32_losses = workload["reference_losses"].as_array().unwrap();
        assert_eq!((f64_losses.len(), f32_losses.len()), (5, 5), "{name}");
        let exported = f64_losses[0].as_f64().unwrap();
        assert!(
            (loss - exported).abs() <= 1e-12 * loss.abs(),
            "{name}: the file's model gives loss {loss}, the export says {exported}"
        );
        // The f32 engine's first loss is the same forward pass in f32 (through C's alpha-scaled
        // singular values where defended, which amplify f32 rounding).
        let from_f32 = f32_losses[0].as_f64().unwrap();
        assert!(
            (from_f32 - loss).abs() <= 1e-3 * loss,
            "{name}: f32 {from_f32}, f64 {loss}"
        );
        // The steps change the loss: the reference checks the update too.
        assert_ne!(f64_losses[4], f64_losses[0], "{name}");
        assert!(workload["flop_per_step"].as_f64().unwrap() > 0.0);
        let factors = file.names().iter().filter(|n| n.contains("factor")).count();
        let defended = workload["defended"].as_bool().unwrap();
        assert_eq!(
            factors,
            if defended { 2 * layers } else { layers },
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cost_curves_are_drawn_from_bench_records_and_bad_files_are_refused() {
    let dir = scratch("plot");
    let records = dir.join("bench.jsonl");
    ok(specdef(&[
        "bench",
        "--engine",
        "cpu",
        "--samples",
        "1",
        "--out",
        path(&records),
    ]));
    let svg = dir.join("curves.svg");
    ok(specdef(&[
        "bench-plot",
        path(&records),
        "--out",
        path(&svg),
    ]));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.starts_with("<svg"),
        "{}",
        &drawn[..100.min(drawn.len())]
    );
    assert!(
        drawn.lines().any(|line| line.trim() == "cpu-f32"),
        "the engine's legend entry"
    );
    assert!(drawn.contains("peak: cpu-f32 matmul"), "the peak line");
    // The standard suite's two attack steps (width 256, batch 128, undefended and defended) lie
    // on both sweeps: a marker each in each of the four panels.
    assert_eq!(drawn.matches("<circle").count(), 8, "{drawn}");

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"schema\": \"specdef.bench/1\"}\n").unwrap();
    let output = specdef(&[
        "bench-plot",
        path(&records),
        path(&bad),
        "--out",
        path(&svg),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.jsonl line 1"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&svg).unwrap(),
        drawn,
        "a refused plot leaves the old file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_suite_or_export_folder_is_refused_naming_it() {
    let output = specdef(&["bench", "--suite", "huge"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--suite"), "{stderr}");

    let dir = scratch("bad-export");
    let file = dir.join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let output = specdef(&["bench", "--export-peer", path(&file)]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a-file"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_thread_count_is_refused_naming_the_variable() {
    assert!(common::specdef_command(&["list"], &[]).status.success());
    // 99999: above the cap (MAX_THREADS), which took minutes to start before it was refused.
    for bad in ["0", "-1", "two", "", "99999"] {
        let output = common::specdef_command(&["list"], &[("SPECDEF_CPU_THREADS", bad)]);
        assert!(
            !output.status.success(),
            "SPECDEF_CPU_THREADS={bad:?} accepted"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("SPECDEF_CPU_THREADS"), "{stderr}");
    }
}

/// `specdef bench-gpu --quick` on the adapter there is: both dispatch chains and each product of
/// the default step in both tile configurations, each record naming the adapter; the rule picks
/// the small tiles for every one of these shapes. Bad counts are refused naming the flag.
#[test]
fn bench_gpu_records_the_dispatch_costs_and_each_product_in_both_tile_configurations() {
    let dir = scratch("gpu-costs");
    let out = dir.join("costs.jsonl");
    let refused = specdef(&["bench-gpu", "--quick", "--dispatches", "0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--dispatches must be"));
    if common::gpu().is_none() {
        return;
    }
    let args = [
        "bench-gpu",
        "--quick",
        "--dispatches",
        "20",
        "--samples",
        "1",
    ];
    ok(specdef(&[&args[..], &["--out", path(&out)]].concat()));
    let records: Vec<serde_json::Value> = (std::fs::read_to_string(&out).unwrap().lines())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let measure = |r: &serde_json::Value| r["measure"].as_str().unwrap().to_string();
    let chains: Vec<_> = records
        .iter()
        .filter(|r| measure(r) == "dispatches")
        .collect();
    assert_eq!(chains.len(), 2);
    assert!(
        chains
            .iter()
            .all(|r| r["us_per_dispatch"].as_f64().unwrap() > 0.0)
    );
    let products: Vec<_> = records.iter().filter(|r| measure(r) == "product").collect();
    // 64-256-256-10: two products in the first layer, three in each of the others.
    assert_eq!(products.len(), 2 * 8, "{records:?}");
    for r in &records {
        assert_eq!(r["schema"], "specdef.gpu_costs/1");
        assert!(!r["adapter"].as_str().unwrap().is_empty());
    }
    for r in &products {
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        let small = r["tile"].as_u64() == Some(64);
        assert_eq!(r["rule_for_plain_product"].as_bool(), Some(small), "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
