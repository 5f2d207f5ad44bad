#!/usr/bin/env bash
# The benchmarks on a machine with a real GPU, in one go: sets up the Vulkan loader where the
# machine lacks one, checks that wgpu opens a hardware adapter on Vulkan (never a software
# one, never GL), checks that the GPU reproduces the reference outcomes (`specdef verify`), runs
# `specdef bench` on the GPU and the CPU engine over the cost-curve suite, runs the JAX peer on
# the same GPU in the same invocation where python3 has a JAX that sees it, draws the cost
# curves, and runs the criterion benches' GPU cases. Every figure is written with the adapter's
# name (the records' `adapter` and `driver` fields).
#
#   benches/gpu.sh                  # builds specdef and the criterion benches with cargo
#   SPECDEF_BIN=path/to/specdef [SPECDEF_CRITERION_DIR=dir] benches/gpu.sh
#                                   # binaries built elsewhere (no cargo needed): the criterion
#                                   # bench executables (`cargo bench --no-run`) in dir
#
# Loader packages: where `ldconfig -p` finds no libvulkan, .deb files under .gl/ (downloaded
# beforehand with `apt-get download libvulkan1`) are unpacked into /. NVIDIA's driver files are
# used from /usr/local/nvidia where the driver is installed there (containers often do this).
# The JAX peer is whatever JAX python3 imports (machines without a registry have one installed);
# its version is in its records. Output: $SPECDEF_GPU_OUT, default out/gpu/ (adapter.txt, verify.txt, gpu_costs.jsonl, bench.jsonl,
# jax-gpu.jsonl, table.md, cost_curves.svg, criterion.txt).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${SPECDEF_GPU_OUT:-out/gpu}"
mkdir -p "$out"

if ! ldconfig -p | grep -q libvulkan; then
    if compgen -G ".gl/*.deb" >/dev/null; then
        echo "== unpacking the Vulkan loader from .gl/"
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    else
        echo "gpu.sh: no Vulkan loader (libvulkan) here and no .gl/*.deb to unpack" >&2
        exit 1
    fi
fi
nvidia=/usr/local/nvidia/share
if [[ -f "$nvidia/vulkan/icd.d/nvidia_icd.json" && -z "${VK_DRIVER_FILES:-}" ]]; then
    export VK_DRIVER_FILES="$nvidia/vulkan/icd.d/nvidia_icd.json"
    export __EGL_VENDOR_LIBRARY_FILENAMES="$nvidia/glvnd/egl_vendor.d/10_nvidia.json"
fi
# Vulkan only: the engine never falls back to GL, and the check below refuses a software one.
export WGPU_BACKEND=vulkan

if [[ -n "${SPECDEF_BIN:-}" ]]; then
    specdef="$SPECDEF_BIN"
else
    echo "== cargo build --release"
    cargo build --release
    specdef="${CARGO_TARGET_DIR:-$root/target}/release/specdef"
fi

echo "== adapter"
"$specdef" info | tee "$out/adapter.txt"
if grep -qiE "llvmpipe|lavapipe|swiftshader|, cpu," "$out/adapter.txt"; then
    echo "gpu.sh: the adapter is a software rasteriser; its timings say nothing about a GPU" >&2
    exit 1
fi

echo "== does this GPU reproduce the reference outcomes? (specdef verify)"
# A difference is a finding to record, not a reason to stop the benchmarks.
"$specdef" verify --engine gpu 2>&1 | tee "$out/verify.txt" || echo "   verify: differences (above)"

echo "== the GPU engine's own costs: a dependent against an independent dispatch, each product of the step in each tile configuration (specdef bench-gpu)"
"$specdef" bench-gpu --out "$out/gpu_costs.jsonl"

echo "== specdef bench, GPU and CPU engines, cost-curve suite"
"$specdef" bench --engine gpu,cpu --suite curves --out "$out/bench.jsonl"
plotted=("$out/bench.jsonl")

here="$root/benches/peers"
if python3 -c 'import jax, safetensors; assert jax.devices("gpu")' >/dev/null 2>&1; then
    echo "== JAX on the same GPU (jit, f32), same workloads"
    export_dir="$(mktemp -d)/export"   # large weight files: kept out of the results folder
    "$specdef" bench --export-peer "$export_dir" --suite peer
    JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest python3 "$here/jax_peer.py" "$export_dir" --config gpu --out "$out/jax-gpu.jsonl"
    python3 "$here/table.py" --specdef "$out/bench.jsonl" --jax "$out/jax-gpu.jsonl" --markdown "$out/table.md"
    plotted+=("$out/jax-gpu.jsonl")
else
    echo "== no JAX with a GPU device in python3: the JAX peer skipped"
fi
"$specdef" bench-plot "${plotted[@]}" --out "$out/cost_curves.svg"

echo "== criterion benches (GPU cases)"
if [[ -n "${SPECDEF_CRITERION_DIR:-}" ]]; then
    for exe in "$SPECDEF_CRITERION_DIR"/*; do
        "$exe" --bench 'gpu|wgsl' 2>&1 | tee -a "$out/criterion.txt"
    done
elif command -v cargo >/dev/null 2>&1; then
    cargo bench --bench matmul --bench attack_step --bench hvp -- 'gpu|wgsl' 2>&1 | tee "$out/criterion.txt"
else
    echo "   no cargo and no SPECDEF_CRITERION_DIR: skipped"
fi
echo "== written: $out/"
