//! Engine behaviour beyond single kernels: errors that name what was wrong, buffer limits, the
//! buffer pool, long recordings in one submission, and GPU timestamp timing.

mod common;

use common::{gpu, rng, uniform};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::{Activation, BinaryOp, DeviceScalar, Recording};
use specdef::{Engine, EngineError, Tolerance};

/// Runs an engine-behaviour check on the CPU engines and, where present, the GPU engine.
fn on_every_engine(check: impl Fn(&mut dyn Engine)) {
    check(&mut CpuEngine64::new());
    check(&mut CpuEngine32::new());
    if let Some(mut gpu) = gpu() {
        check(&mut *gpu);
    }
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let mut cpu = CpuEngine64::new();
    let a = cpu.alloc("a", 3, 4).unwrap();
    let b = cpu.alloc("b", 5, 6).unwrap();
    let c = cpu.alloc("c", 3, 6).unwrap();
    let err = Recording::new().matmul(a, b, c, false, false).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("matmul: inner dimensions differ (4 vs 5)"),
        "{message}"
    );
    assert!(
        message.contains("3x4") && message.contains("5x6"),
        "{message}"
    );

    let err = Recording::new().binary(BinaryOp::Add, a, a, a).unwrap_err();
    assert!(err.to_string().contains("must not alias"), "{err}");
    let err = Recording::new().transpose(a, a).unwrap_err();
    assert!(err.to_string().contains("out must be 4x3"), "{err}");
}

#[test]
fn tangent_and_device_scalar_ops_refuse_bad_shapes_and_aliasing() {
    let mut cpu = CpuEngine64::new();
    let x = cpu.alloc("x", 3, 4).unwrap();
    let y = cpu.alloc("y", 3, 4).unwrap();
    let dx = cpu.alloc("dx", 3, 4).unwrap();
    let out = cpu.alloc("out", 3, 4).unwrap();
    let wide = cpu.alloc("wide", 3, 5).unwrap();
    let rows = cpu.alloc("rows", 3, 1).unwrap();
    let d_loss = cpu.alloc("d_loss", 3, 1).unwrap();
    let one = cpu.alloc("one", 1, 1).unwrap();
    let two = cpu.alloc("two", 1, 1).unwrap();
    let has = |result: Result<&mut Recording, EngineError>, op: &str, text: &str| {
        let m = result.map(|_| ()).unwrap_err().to_string();
        assert!(m.starts_with(&format!("{op}: ")) && m.contains(text), "{m}");
    };
    let f = Activation::Gelu;

    let mut rec = Recording::new();
    rec.activate_grad_jvp(f, x, y, dx, dx, out).unwrap();
    has(
        Recording::new().activate_grad_jvp(f, x, y, dx, wide, out),
        "activate_grad_jvp",
        "x and d_grad_y must have the same shape",
    );
    has(
        Recording::new().activate_grad_jvp(f, x, y, dx, y, dx),
        "activate_grad_jvp",
        "must not alias",
    );

    rec.softmax_cross_entropy_jvp(x, rows, dx, d_loss, out, 1.0)
        .unwrap();
    has(
        Recording::new().softmax_cross_entropy_jvp(x, rows, dx, rows, out, 1.0),
        "softmax_cross_entropy_jvp",
        "must not alias",
    );
    has(
        Recording::new().softmax_cross_entropy_jvp(x, rows, dx, one, out, 1.0),
        "softmax_cross_entropy_jvp",
        "d_loss must be 3x1",
    );
    has(
        Recording::new().softmax_cross_entropy_jvp(x, rows, wide, d_loss, out, 1.0),
        "softmax_cross_entropy_jvp",
        "logits and d_logits must have the same shape",
    );

    let ratio = DeviceScalar::ratio(2.0, one, two);
    rec.axpy_device(ratio, x, y).unwrap();
    rec.scale_device(DeviceScalar::constant(0.5), x, out)
        .unwrap();
    assert_eq!(rec.len(), 4, "the valid ops were recorded");
    has(
        Recording::new().axpy_device(DeviceScalar::ratio(2.0, one, rows), x, y),
        "axpy_device",
        "the scalar's den must be 1x1",
    );
    has(
        Recording::new().axpy_device(ratio, x, wide),
        "axpy_device",
        "x and y must have the same shape",
    );
    has(
        Recording::new().axpy_device(ratio, x, x),
        "axpy_device",
        "must not alias",
    );
    // Writing the scalar's own operand in the same dispatch is refused too.
    has(
        Recording::new().scale_device(DeviceScalar::inverse_sqrt(1.0, one), one, one),
        "scale_device",
        "must not alias",
    );
    has(
        Recording::new().axpy_device(DeviceScalar::ratio(1.0, one, two), one, two),
        "axpy_device",
        "must not alias",
    );
}

#[test]
fn empty_tensors_freed_tensors_and_wrong_upload_lengths_are_refused() {
    on_every_engine(|e| {
        let name = e.info().engine;
        assert!(
            matches!(
                e.alloc("weights", 0, 3),
                Err(EngineError::EmptyTensor { .. })
            ),
            "{name}"
        );
        let t = e.alloc("weights", 2, 3).unwrap();
        let err = e.upload(t, &[1.0; 5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "upload to tensor 'weights': 5 values given, the tensor holds 6",
            "{name}"
        );
        e.free(t);
        assert!(
            matches!(e.read(&[t]), Err(EngineError::UnknownTensor { .. })),
            "{name}"
        );
        let out = e.alloc("out", 2, 3).unwrap();
        let mut rec = Recording::new();
        rec.scale(2.0, t, out).unwrap();
        assert!(
            matches!(e.run(&rec), Err(EngineError::UnknownTensor { .. })),
            "{name}"
        );
    });
}

#[test]
fn a_buffer_over_the_device_limit_is_refused_with_its_name_and_the_limit() {
    let Some(mut gpu) = gpu() else { return };
    let limit = gpu.limits().max_storage_buffer_binding_size;
    let rows = (limit / 4 / 1024 + 1) as usize;
    let err = gpu.alloc("huge_activations", rows, 1024).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, EngineError::BufferTooLarge { .. }),
        "{message}"
    );
    assert!(message.contains("huge_activations"), "{message}");
    assert!(message.contains(&limit.to_string()), "{message}");
    // The engine still works afterwards.
    let t = gpu.tensor_from("small", 1, 2, &[1.0, 2.0]).unwrap();
    assert_eq!(gpu.read_one(t).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn freed_buffers_are_reused_by_the_pool() {
    let Some(mut gpu) = gpu() else { return };
    let t = gpu.alloc("first", 100, 100).unwrap();
    let idle_before = gpu.pooled_buffers();
    gpu.free(t);
    assert_eq!(gpu.pooled_buffers(), idle_before + 1);
    let again = gpu.alloc("second", 99, 101).unwrap();
    assert_eq!(
        gpu.pooled_buffers(),
        idle_before,
        "the freed buffer was reused"
    );
    gpu.free(again);
}

#[test]
fn thousands_of_dispatches_in_one_recording_run_in_order() {
    // 3000 axpy steps in one submission: more params slots than the initial ring holds, and each
    // step depends on the one before.
    let steps = 3000;
    let x = uniform(&mut rng(8), 64, 1.0);
    on_every_engine(|e| {
        let tx = e.tensor_from("x", 8, 8, &x).unwrap();
        let acc = e.tensor_from("acc", 8, 8, &[0.0; 64]).unwrap();
        let mut step = Recording::new();
        step.axpy(0.5, tx, acc).unwrap();
        let mut rec = Recording::new();
        (0..steps).for_each(|_| rec.extend(&step));
        e.run(&rec).unwrap();
        let got = e.read_one(acc).unwrap();
        let expected: Vec<f64> = x.iter().map(|v| v * 0.5 * steps as f64).collect();
        // Adding the same increment K times rounds the same way each time: the error grows
        // linearly in K (the worst-case bound), not like sqrt(K).
        Tolerance::f32_elementwise(steps)
            .check(&got, &expected)
            .unwrap_or_else(|err| panic!("{}: {err}", e.info().engine));
    });
}

#[test]
fn reading_returns_only_the_tensors_asked_for() {
    on_every_engine(|e| {
        let a = e.tensor_from("a", 1, 3, &[1.0, 2.0, 3.0]).unwrap();
        let b = e.tensor_from("b", 2, 1, &[4.0, 5.0]).unwrap();
        let values = e.read(&[b, a]).unwrap();
        assert_eq!(values, vec![vec![4.0, 5.0], vec![1.0, 2.0, 3.0]]);
    });
}

#[test]
fn timed_runs_report_one_device_time_per_dispatch() {
    let Some(mut gpu) = gpu() else { return };
    let a = gpu.tensor_from("a", 64, 64, &[1.0; 4096]).unwrap();
    let b = gpu.alloc("b", 64, 64).unwrap();
    let mut rec = Recording::new();
    rec.matmul(a, a, b, false, false).unwrap();
    rec.scale(2.0, b, a).unwrap();
    if !gpu.has_timestamps() {
        assert!(matches!(
            gpu.run_timed(&rec),
            Err(EngineError::Unsupported(_))
        ));
        eprintln!("adapter has no TIMESTAMP_QUERY: checked that run_timed refuses");
        return;
    }
    let timings = gpu.run_timed(&rec).unwrap();
    let kernels: Vec<&str> = timings.iter().map(|t| t.kernel.as_str()).collect();
    assert_eq!(kernels, ["matmul_nn", "scale"]);
    assert!(
        timings
            .iter()
            .all(|t| t.device_ns.is_finite() && t.device_ns >= 0.0)
    );
    // The timed run computed the same thing as an untimed one would.
    assert_eq!(gpu.read_one(a).unwrap(), vec![128.0; 4096]);
}

#[test]
fn every_pipeline_compiles_on_the_device() {
    let Some(mut gpu) = gpu() else { return };
    gpu.compile_all().unwrap();
}

#[test]
fn the_f32_engine_flushes_subnormals_like_a_gpu_and_the_f64_reference_does_not() {
    // 1e-39 is subnormal in f32 (the smallest normal is about 1.18e-38).
    let check = |e: &mut dyn Engine| {
        let x = e.tensor_from("x", 1, 1, &[1e-20]).unwrap();
        let out = e.alloc("out", 1, 1).unwrap();
        let mut rec = Recording::new();
        rec.scale(1e-19, x, out).unwrap();
        e.run(&rec).unwrap();
        e.read_one(out).unwrap()[0]
    };
    let f64_result = check(&mut CpuEngine64::new());
    assert!((f64_result - 1e-39).abs() < 1e-50, "{f64_result}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(check(&mut CpuEngine32::new()), 0.0);
    }
    // The mode is restored after the run: ordinary f32 code on this thread keeps subnormals.
    let tiny = std::hint::black_box(1e-20f32) * std::hint::black_box(1e-19f32);
    assert!(tiny > 0.0);
}
