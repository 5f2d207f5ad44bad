#!/usr/bin/env python3
"""JAX peer of specdef's `--suite peer` workloads: Adam steps of an MLP on JAX (CPU by default).

    jax_peer.py EXPORT_DIR --config NAME --out FILE.jsonl [--quick] [--only TEXT] [--rtol X]

EXPORT_DIR is what `specdef bench --export-peer EXPORT_DIR --suite peer` writes (workloads.json
and one safetensors file per workload). For every workload this script

1. builds the step in f32 (one jitted Adam step, and one jitted call running `steps_per_run`
   steps with `lax.scan`) from the file's weights, inputs and labels;
2. checks that both compiled functions reproduce specdef's losses of steps 1..5
   (`reference_losses`, relative difference <= 1e-3, `--rtol`) and, where the manifest gives
   `reference_losses_f64`, that the same step in f64 reproduces those (<= 1e-6; then f32
   drift after step 1 is reported but not fatal, see `check`); any mismatch exits with
   status 1 naming the workload, before anything is timed;
3. times both ways as specdef's harness does (2 warm-up samples dropped, each recalibrating the
   runs per sample so that a sample lasts >= 0.2 s; then 5 samples; steps/s per sample) and
   writes one `specdef.bench/1` JSON line per (workload, way) to --out.

`--config` is only a label (`default-threads`, `1-thread`, `gpu`): threading and the device
are the caller's environment (XLA_FLAGS, taskset; JAX_PLATFORMS=cuda for the GPU, which
benches/gpu.sh sets). The records name the device JAX ran on. `--quick` (or SPECDEF_PEER_QUICK=1) is for smoke tests: 1
warm-up sample, 2 samples of >= 0.02 s; its records say so through warmup_samples and the
number of samples, and are not benchmark figures.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

# Before jax is imported: f32 throughout (x64 only inside the f64 check's context).
os.environ.setdefault("JAX_ENABLE_X64", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from machine import cpu_model

PEER_SCHEMA = "specdef.peer/1"
BENCH_SCHEMA = "specdef.bench/1"
MAX_RUNS_PER_SAMPLE = 10_000  # as specdef's harness
F32_RTOL = 1e-3
F64_RTOL = 1e-6


def log(msg):
    print(msg, file=sys.stderr, flush=True)




# ---------------------------------------------------------------------------------------------
# The workload


def load_workload(export_dir, w):
    """(params, inputs, labels) as numpy: params is [{"factors": [F0, F1, ...], "bias": b}]."""
    tensors = load_file(os.path.join(export_dir, w["file"]))
    widths = w["widths"]
    params = []
    for i in range(len(widths) - 1):
        factors = []
        while f"layer{i}.factor{len(factors)}" in tensors:
            factors.append(tensors[f"layer{i}.factor{len(factors)}"])
        bias = tensors.get(f"layer{i}.bias")
        if not factors or bias is None:
            raise ValueError(f"{w['file']}: layer {i} has no factors or no bias")
        # The chain maps widths[i] -> widths[i+1]: F0 is [out0, widths[i]], Fj is [outj, outj-1].
        n_in = widths[i]
        for j, f in enumerate(factors):
            if f.ndim != 2 or f.shape[1] != n_in:
                raise ValueError(f"{w['file']}: layer{i}.factor{j} has shape {f.shape}, "
                                 f"expected [*, {n_in}]")
            n_in = f.shape[0]
        if n_in != widths[i + 1] or bias.shape != (widths[i + 1],):
            raise ValueError(f"{w['file']}: layer {i} ends at width {n_in}, bias {bias.shape}, "
                             f"expected {widths[i + 1]}")
        params.append({"factors": [np.asarray(f, np.float32) for f in factors],
                       "bias": np.asarray(bias, np.float32)})
    inputs = np.asarray(tensors["inputs"], np.float32)
    labels = np.asarray(tensors["labels"]).astype(np.int32)
    if inputs.shape != (w["batch"], widths[0]) or labels.shape != (w["batch"],):
        raise ValueError(f"{w['file']}: inputs {inputs.shape}, labels {labels.shape}, "
                         f"expected [{w['batch']}, {widths[0]}] and [{w['batch']}]")
    if labels.min() < 0 or labels.max() >= widths[-1]:
        raise ValueError(f"{w['file']}: labels outside 0..{widths[-1] - 1}")
    return params, inputs, labels


def make_functions(w):
    """The jitted single step and the jitted run of `steps_per_run` steps, for one workload."""
    if w.get("activation", "relu") != "relu":
        raise ValueError(f"{w['name']}: activation {w['activation']!r} is not supported")
    opt = w["optimizer"]
    if opt["kind"] != "adam":
        raise ValueError(f"{w['name']}: optimizer {opt['kind']!r} is not supported")
    lr, b1, b2 = opt["lr"], opt["beta1"], opt["beta2"]
    eps, wd = opt["eps"], opt.get("weight_decay", 0.0)
    steps = int(w["steps_per_run"])

    def loss_fn(params, x, y):
        h = x
        for i, layer in enumerate(params):
            for f in layer["factors"]:
                h = h @ f.T
            h = h + layer["bias"]
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        logz = jax.nn.logsumexp(h, axis=1)
        picked = jnp.take_along_axis(h, y[:, None], axis=1)[:, 0]
        return jnp.mean(logz - picked)

    def step(state, x, y):
        """One Adam step; returns the new state and the loss before the update."""
        params, m, v, t = state
        loss, g = jax.value_and_grad(loss_fn)(params, x, y)
        t = t + 1
        dtype = loss.dtype
        tf = t.astype(dtype)
        # 1 - beta^t, accurate in f32 for small t (1 - 0.999^1 loses 4 digits otherwise).
        c1 = -jnp.expm1(tf * jnp.log(jnp.asarray(b1, dtype)))
        c2 = -jnp.expm1(tf * jnp.log(jnp.asarray(b2, dtype)))
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        params = jax.tree.map(
            lambda p, m, v: p - lr * ((m / c1) / (jnp.sqrt(v / c2) + eps) + wd * p),
            params, m, v)
        return (params, m, v, t), loss

    def run(state, x, y):
        """`steps` steps in one call; the losses of every step (read once, as specdef does)."""
        return jax.lax.scan(lambda s, _: step(s, x, y), state, None, length=steps)

    # The state is donated: updated in place, as specdef's buffers are.
    return step, run


def initial_state(params_np, dtype):
    params = jax.tree.map(lambda a: jnp.array(a, dtype=dtype, copy=True), params_np)
    zeros = jax.tree.map(jnp.zeros_like, params)
    return (params, zeros, jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))


def max_rel_diff(got, want):
    worst = 0.0
    for g, r in zip(got, want):
        g, r = float(g), float(r)
        if not (math.isfinite(g) and math.isfinite(r)):
            d = 0.0 if (math.isnan(g) and math.isnan(r)) or g == r else math.inf
        else:
            d = abs(g - r) / max(abs(r), 1e-30)
        worst = max(worst, d)
    return worst


def fmt(values):
    return "[" + ", ".join(f"{float(v):.7g}" for v in values) + "]"


# ---------------------------------------------------------------------------------------------
# Measurement, as specdef's harness (src/benchmark/harness.rs)


def measure(run_once, steps_per_run, warmup, samples, min_seconds):
    runs = 1
    for _ in range(warmup):
        t0 = time.perf_counter()
        for _ in range(runs):
            run_once()
        seconds = max(time.perf_counter() - t0, 1e-9)
        runs = min(max(math.ceil(min_seconds / (seconds / runs)), 1), MAX_RUNS_PER_SAMPLE)
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(runs):
            run_once()
        seconds = max(time.perf_counter() - t0, 1e-9)
        out.append(steps_per_run * runs / seconds)
    return runs, out


def device_description():
    """(backend, adapter, device_type) of the device JAX runs on, as specdef's records name them."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu", cpu_model(), "host"
    return device.platform, device.device_kind, "gpu"


def record(w, engine, runs, warmup, samples):
    backend, adapter, device_type = device_description()
    s = sorted(samples)
    n = len(s)
    median = (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")
    return {
        "schema": BENCH_SCHEMA,
        "crate_version": jax.__version__,
        "engine": engine,
        "backend": backend,
        "adapter": adapter,
        "driver": f"XLA via jax {jax.__version__}, jaxlib {jaxlib.__version__}",
        "device_type": device_type,
        "platform": "native",
        "timer": "time.perf_counter",
        "workload": w["name"],
        "unit": "steps/s",
        "runs_per_sample": runs,
        "warmup_samples": warmup,
        "samples": samples,
        "median": median,
        "min": s[0] if s else float("nan"),
        "max": s[-1] if s else float("nan"),
        "kernel_ms_per_run": None,
        "flop_per_step": w.get("flop_per_step"),
    }


# ---------------------------------------------------------------------------------------------


def check(w, data, step_fn, step, run, rtol=F32_RTOL):
    """Compares the f32 functions (and, where given, an f64 step) with specdef's losses.

    Returns (ok, lines). A workload fails where the f32 losses differ by more than rtol at
    any compared step; where the manifest also gives f64 losses and the f64 step matches them,
    f32 drift after step 1 is reported but not fatal: it is rounding amplified by the loss's
    curvature (SpecDef's point), not a different workload.
    """
    params_np, x_np, y_np = data
    ref = [float(r) for r in w.get("reference_losses", [])]
    if not ref:
        return False, ["no reference_losses in the manifest"]
    n = len(ref)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)

    state = initial_state(params_np, jnp.float32)
    loop = []
    for _ in range(n):
        state, loss = step(state, x, y)
        loop.append(float(loss))
    # The timed scan itself, run as many times as it takes to cover the reference steps.
    state, scan = initial_state(params_np, jnp.float32), []
    while len(scan) < n:
        state, losses = run(state, x, y)
        scan.extend(float(v) for v in np.asarray(losses))
    scan = scan[:n]

    lines = []
    d_loop, d_scan = max_rel_diff(loop, ref), max_rel_diff(scan, ref)
    d1 = max(max_rel_diff(loop[:1], ref[:1]), max_rel_diff(scan[:1], ref[:1]))
    lines.append(f"f32 max rel diff over {n} steps: loop {d_loop:.2e}, scan {d_scan:.2e} "
                 f"(step 1: {d1:.2e})")
    moved = max_rel_diff(ref, ref[:1] * n)
    if n > 1 and moved <= rtol:
        lines.append(f"  (specdef's loss moves only {moved:.1e} over these steps, under the "
                     f"tolerance {rtol:g}: this f32 comparison tests the data and the forward "
                     f"pass, not the update)")
    ok32 = max(d_loop, d_scan) <= rtol
    if not ok32:
        lines.append(f"  specdef f32 {fmt(ref)}")
        lines.append(f"  jax loop    {fmt(loop)}")
        lines.append(f"  jax scan    {fmt(scan)}")

    ref64 = w.get("reference_losses_f64")
    if ref64 is None:
        return ok32, lines
    ref64 = [float(r) for r in ref64]
    with jax.enable_x64(True):
        step64 = jax.jit(step_fn)
        state = initial_state(params_np, jnp.float64)
        x64 = jnp.asarray(x_np, jnp.float64)
        got64 = []
        for _ in range(len(ref64)):
            state, loss = step64(state, x64, y)
            got64.append(float(loss))
    d64 = max_rel_diff(got64, ref64)
    lines.append(f"f64 max rel diff over {len(ref64)} steps: {d64:.2e}")
    ok64 = d64 <= F64_RTOL
    if not ok64:
        lines.append(f"  specdef f64 {fmt(ref64)}")
        lines.append(f"  jax f64     {fmt(got64)}")
    if ok64 and not ok32 and d1 <= rtol:
        lines.append("  f32 drift after step 1 with f64 matching: rounding amplified by the "
                     "curvature, not a different workload (not fatal)")
        return True, lines
    return ok32 and ok64, lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("--config", required=True, help="label for the threading, e.g. 1-thread")
    ap.add_argument("--out", required=True, help="JSON-lines file to write (replaced)")
    ap.add_argument("--quick", action="store_true",
                    default=os.environ.get("SPECDEF_PEER_QUICK", "") not in ("", "0"),
                    help="smoke test: 1 warm-up sample, 2 samples of >= 0.02 s "
                         "(also SPECDEF_PEER_QUICK=1)")
    ap.add_argument("--only", default=None, help="only workloads whose name contains this")
    ap.add_argument("--rtol", type=float, default=F32_RTOL,
                    help=f"largest relative difference of the f32 losses (default {F32_RTOL:g})")
    args = ap.parse_args()

    warmup, samples, min_seconds = (1, 2, 0.02) if args.quick else (2, 5, 0.2)

    with open(os.path.join(args.export_dir, "workloads.json")) as f:
        manifest = json.load(f)
    if manifest.get("schema") != PEER_SCHEMA:
        sys.exit(f"{args.export_dir}/workloads.json: schema {manifest.get('schema')!r}, "
                 f"expected {PEER_SCHEMA!r}")
    workloads = [w for w in manifest["workloads"] if not args.only or args.only in w["name"]]
    if not workloads:
        sys.exit("no workloads to run")

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    log(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, devices {jax.devices()}; "
        f"{cpu_model()}; {affinity} of {os.cpu_count()} CPUs usable; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; config {args.config}"
        + ("; QUICK (smoke test, not figures)" if args.quick else ""))

    # Everything is checked before anything is timed.
    prepared, failed = [], []
    for w in workloads:
        t0 = time.perf_counter()
        data = load_workload(args.export_dir, w)
        step_fn, run_fn = make_functions(w)
        step = jax.jit(step_fn, donate_argnums=0)
        run = jax.jit(run_fn, donate_argnums=0)
        ok, lines = check(w, data, step_fn, step, run, args.rtol)
        log(f"[check] {w['name']}: {'ok' if ok else 'MISMATCH'} "
            f"({time.perf_counter() - t0:.1f} s)")
        for line in lines:
            log(f"    {line}")
        if not ok:
            failed.append(w["name"])
        prepared.append((w, data, step, run))
    if failed:
        log("JAX does not reproduce specdef's losses for: " + "; ".join(failed))
        sys.exit(1)

    with open(args.out, "w") as out:
        for w, (params_np, x_np, y_np), step, run in prepared:
            x, y = jnp.asarray(x_np), jnp.asarray(y_np)
            steps = int(w["steps_per_run"])
            for way in ("loop", "scan"):
                # [state, last loss(es)]: the state carries over from run to run, as specdef's.
                holder = [initial_state(params_np, jnp.float32), None]

                if way == "loop":
                    def run_once():
                        state = holder[0]
                        for _ in range(steps):
                            state, loss = step(state, x, y)
                        holder[0] = state
                        holder[1] = loss.block_until_ready()
                else:
                    def run_once():
                        holder[0], losses = run(holder[0], x, y)
                        holder[1] = losses.block_until_ready()

                t0 = time.perf_counter()
                log(f"[time] {w['name']} / {way}: warming up")
                runs, got = measure(run_once, steps, warmup, samples, min_seconds)
                rec = record(w, f"jax-{args.config}-{way}", runs, warmup, got)
                out.write(json.dumps(rec) + "\n")
                out.flush()
                log(f"[time] {w['name']} / {way}: {rec['median']:.1f} steps/s "
                    f"(min {rec['min']:.1f}, max {rec['max']:.1f}; {len(got)} samples of "
                    f"{runs} runs; {time.perf_counter() - t0:.1f} s; last loss "
                    f"{float(np.ravel(np.asarray(holder[1]))[-1]):.4g})")
                del holder


if __name__ == "__main__":
    main()
