//! Engine behaviour beyond single kernels: errors that name what was wrong, buffer limits, the
//! buffer pool, long recordings in one submission, and GPU timestamp timing.

mod common;

use common::{gpu, rng, uniform};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::{
    Activation, AdaHessianHyper, BinaryOp, DampingHyper, DeviceScalar, Recording, SophiaHyper,
    UnaryOp, tangent_recording,
};
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
fn second_order_optimiser_ops_refuse_bad_shapes_aliasing_and_bad_hyper_parameters() {
    let mut cpu = CpuEngine64::new();
    let p = cpu.alloc("p", 3, 4).unwrap();
    let g = cpu.alloc("g", 3, 4).unwrap();
    let h = cpu.alloc("h", 3, 4).unwrap();
    let m = cpu.alloc("m", 3, 4).unwrap();
    let v = cpu.alloc("v", 3, 4).unwrap();
    let wide = cpu.alloc("wide", 3, 5).unwrap();
    let rows = cpu.alloc("rows", 3, 1).unwrap();
    let one = cpu.alloc("one", 1, 1).unwrap();
    let two = cpu.alloc("two", 1, 1).unwrap();
    let three = cpu.alloc("three", 1, 1).unwrap();
    let has = |result: Result<&mut Recording, EngineError>, op: &str, text: &str| {
        let m = result.map(|_| ()).unwrap_err().to_string();
        assert!(m.starts_with(&format!("{op}: ")) && m.contains(text), "{m}");
    };
    let ada = AdaHessianHyper::default();
    let sophia = SophiaHyper::default();
    let damping = DampingHyper::default();

    let mut rec = Recording::new();
    rec.abs(p, g)
        .unwrap()
        .sign(p, g)
        .unwrap()
        .ema(0.9, p, g)
        .unwrap();
    rec.rademacher(p, 1, 2);
    rec.sample_categorical(p, rows, 1, 2).unwrap();
    rec.adahessian(p, g, h, (m, v), ada, 1).unwrap();
    rec.sophia(p, g, h, m, sophia).unwrap();
    rec.damping_update(one, two, three, damping).unwrap();
    // actual and predicted may be one tensor (both are read only).
    rec.damping_update(one, two, two, damping).unwrap();
    assert_eq!(rec.len(), 9, "the valid ops were recorded");

    has(
        Recording::new().abs(p, wide),
        "abs",
        "x and out must have the same shape",
    );
    has(Recording::new().sign(p, p), "sign", "must not alias");
    has(
        Recording::new().unary(UnaryOp::Abs, p, p),
        "abs",
        "must not alias",
    );
    has(Recording::new().ema(0.9, p, p), "ema", "must not alias");
    has(
        Recording::new().ema(0.9, p, wide),
        "ema",
        "x and avg must have the same shape",
    );
    has(
        Recording::new().sample_categorical(p, one, 1, 2),
        "sample_categorical",
        "labels_out must be 3x1",
    );
    has(
        Recording::new().adahessian(p, g, wide, (m, v), ada, 1),
        "adahessian",
        "param and hess_diag must have the same shape",
    );
    has(
        Recording::new().adahessian(p, g, h, (m, g), ada, 1),
        "adahessian",
        "must not alias",
    );
    has(
        Recording::new().adahessian(p, g, h, (m, m), ada, 1),
        "adahessian",
        "must not alias",
    );
    let too_strong = AdaHessianHyper {
        hessian_power: 1.5,
        ..ada
    };
    has(
        Recording::new().adahessian(p, g, h, (m, v), too_strong, 1),
        "adahessian",
        "hessian_power must be in [0, 1], got 1.5",
    );
    has(
        Recording::new().sophia(p, g, wide, m, sophia),
        "sophia",
        "param and hess must have the same shape",
    );
    has(
        Recording::new().sophia(p, g, h, h, sophia),
        "sophia",
        "must not alias",
    );
    has(
        Recording::new().damping_update(rows, two, three, damping),
        "damping_update",
        "lambda must be 1x1",
    );
    has(
        Recording::new().damping_update(one, one, three, damping),
        "damping_update",
        "must not alias",
    );
    let inverted = DampingHyper {
        min_lambda: 2.0,
        max_lambda: 1.0,
        ..damping
    };
    has(
        Recording::new().damping_update(one, two, three, inverted),
        "damping_update",
        "min_lambda (2) must not exceed max_lambda (1)",
    );
}

/// The tangents of sigmoid, softplus, exp, log1p and rsqrt against central differences of
/// their f64 values.
#[test]
fn tangents_of_the_transcendental_unary_ops_match_central_differences() {
    let mut e = CpuEngine64::new();
    let dxs = [1.0, -2.0, 5.0, 0.5, -1.0, 2.0, 3.0, -0.25];
    let dx = e.tensor_from("dx", 2, 4, &dxs).unwrap();
    for op in [
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Exp,
        UnaryOp::Log1p,
        UnaryOp::Rsqrt,
    ] {
        let xs = match op {
            UnaryOp::Rsqrt => [0.5, 0.75, 1.0, 2.0, 7.5, 30.0, 100.0, 1e4],
            UnaryOp::Exp => [-30.0, -2.0, -0.5, 0.0, 0.75, 3.0, 12.0, 20.0],
            UnaryOp::Log1p => [-0.9, -0.5, -1e-3, 0.0, 1e-6, 0.75, 3.0, 40.0],
            _ => [-30.0, -2.0, -0.5, 0.0, 0.75, 3.0, 12.0, 40.0],
        };
        let x = e.tensor_from("x", 2, 4, &xs).unwrap();
        let out = e.alloc("out", 2, 4).unwrap();
        let mut primal = Recording::new();
        primal.unary(op, x, out).unwrap();
        let tangent = tangent_recording(&mut e, &primal, &[(x, dx)]).unwrap();
        e.run(&tangent.recording).unwrap();
        let d_out = e.read_one(tangent.tangent_of(out).unwrap()).unwrap();
        let value = |v: f64| {
            let mut y = [0.0];
            specdef::engine::cpu::elementwise::unary(op, &[v], &mut y);
            y[0]
        };
        for ((x, dx), got) in xs.iter().zip(&dxs).zip(&d_out) {
            let h = 1e-5;
            let expected = (value(x + h) - value(x - h)) / (2.0 * h) * dx;
            assert!(
                (got - expected).abs() <= 1e-8 * (1.0 + expected.abs()),
                "{}: at {x}: {got} against {expected}",
                op.name()
            );
        }
    }
}

/// The tangent rules of the new elementwise ops, against their definitions: d|x| = sign(x) dx,
/// sign and random draws have zero tangents, the moving average's is the moving average of the
/// tangents; optimiser and damping updates are refused by name.
#[test]
fn tangents_of_abs_ema_and_random_draws_and_refusals_of_updates() {
    let mut e = CpuEngine64::new();
    let xs = [-2.0, -0.5, 0.0, 0.75, 3.0, 1.5];
    let dxs = [1.0, -2.0, 5.0, 0.5, -1.0, 2.0];
    let avg0 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
    let d_avg0 = [1.0, 1.0, -1.0, 0.0, 2.0, 0.5];
    let x = e.tensor_from("x", 2, 3, &xs).unwrap();
    let dx = e.tensor_from("dx", 2, 3, &dxs).unwrap();
    let avg = e.tensor_from("avg", 2, 3, &avg0).unwrap();
    let d_avg = e.tensor_from("d_avg", 2, 3, &d_avg0).unwrap();
    let abs = e.alloc("abs", 2, 3).unwrap();
    let sign = e.alloc("sign", 2, 3).unwrap();
    let probe = e.alloc("probe", 2, 3).unwrap();
    let labels = e.alloc("labels", 2, 1).unwrap();
    let mut primal = Recording::new();
    primal.abs(x, abs).unwrap().sign(x, sign).unwrap();
    primal.ema(0.75, x, avg).unwrap();
    primal.rademacher(probe, 1, 2);
    primal.sample_categorical(x, labels, 1, 3).unwrap();
    let tangent = tangent_recording(&mut e, &primal, &[(x, dx), (avg, d_avg)]);
    // avg is written by the ema, and a seed may not be written: seed a copy's tangent instead.
    assert!(tangent.is_err());
    let avg_copy = e.tensor_from("avg_copy", 2, 3, &avg0).unwrap();
    let mut primal = Recording::new();
    primal.abs(x, abs).unwrap().sign(x, sign).unwrap();
    primal.scale(1.0, avg_copy, avg).unwrap();
    primal.ema(0.75, x, avg).unwrap();
    primal.rademacher(probe, 1, 2);
    primal.sample_categorical(x, labels, 1, 3).unwrap();
    let tangent = tangent_recording(&mut e, &primal, &[(x, dx), (avg_copy, d_avg)]).unwrap();
    e.run(&tangent.recording).unwrap();
    let d_abs = e.read_one(tangent.tangent_of(abs).unwrap()).unwrap();
    let expected: Vec<f64> = xs
        .iter()
        .zip(&dxs)
        .map(|(x, dx)| if *x == 0.0 { 0.0 } else { x.signum() * dx })
        .collect();
    assert_eq!(d_abs, expected);
    let d_avg_after = e.read_one(tangent.tangent_of(avg).unwrap()).unwrap();
    let expected: Vec<f64> = d_avg0
        .iter()
        .zip(&dxs)
        .map(|(da, dx)| 0.75 * da + 0.25 * dx)
        .collect();
    Tolerance::new(1e-15, 1e-15)
        .check(&d_avg_after, &expected)
        .unwrap();
    for zero in [sign, probe, labels] {
        assert!(tangent.tangent_of(zero).is_none());
    }

    let (g, h, m, v) = (dx, avg_copy, abs, sign);
    let one = e.tensor_from("one", 1, 1, &[1.0]).unwrap();
    let two = e.tensor_from("two", 1, 1, &[-1.0]).unwrap();
    let three = e.tensor_from("three", 1, 1, &[-2.0]).unwrap();
    let mut updates: Vec<(&str, Recording)> = Vec::new();
    let mut rec = Recording::new();
    rec.adahessian(x, g, h, (m, v), AdaHessianHyper::default(), 1)
        .unwrap();
    updates.push(("adahessian", rec));
    let mut rec = Recording::new();
    rec.sophia(x, g, h, m, SophiaHyper::default()).unwrap();
    updates.push(("sophia", rec));
    let mut rec = Recording::new();
    rec.damping_update(one, two, three, DampingHyper::default())
        .unwrap();
    updates.push(("damping_update", rec));
    for (op, rec) in updates {
        let err = tangent_recording(&mut e, &rec, &[(x, dx)]).err().unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{op}: has no tangent rule")),
            "{message}"
        );
    }
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

/// A recording run again reuses its plan (its params included) and still computes what it
/// computed; a recording of other scalars on the same tensors is another plan, whose params must
/// not leak into the first's next run; a kept plan naming a freed tensor is refused like a new one.
#[test]
fn plans_are_kept_by_recording_and_reused_with_their_own_params() {
    let Some(mut gpu) = gpu() else { return };
    let x = gpu
        .tensor_from("x", 2, 3, &[1.0, -2.0, 3.0, 0.5, 0.0, 4.0])
        .unwrap();
    let y = gpu.alloc("y", 2, 3).unwrap();
    let scaled = |alpha: f64| {
        let mut rec = Recording::new();
        rec.scale(alpha, x, y).unwrap().axpy(1.0, x, y).unwrap();
        rec
    };
    let (double_plus, triple_plus) = (scaled(2.0), scaled(3.0));
    let made_before = gpu.plans_made();
    let mut results = Vec::new();
    for rec in [&double_plus, &triple_plus, &double_plus, &double_plus] {
        gpu.run(rec).unwrap();
        results.push(gpu.read_one(y).unwrap());
    }
    assert_eq!(
        gpu.plans_made() - made_before,
        2,
        "one plan per distinct recording"
    );
    assert_eq!(results[0], [3.0, -6.0, 9.0, 1.5, 0.0, 12.0]);
    assert_eq!(results[1], [4.0, -8.0, 12.0, 2.0, 0.0, 16.0]);
    assert_eq!(results[2], results[0], "the kept plan's own params");
    assert_eq!(results[3], results[0]);
    gpu.free(x);
    match gpu.run(&double_plus) {
        Err(EngineError::UnknownTensor { id }) => assert_eq!(id, x.id()),
        other => panic!("a kept plan naming a freed tensor ran: {other:?}"),
    }
    gpu.free(y);
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
