#!/usr/bin/env bash
# The benchmarks on a machine with a real GPU, in one go: sets up the Vulkan loader where the
# machine lacks one, checks that wgpu opens a hardware adapter on Vulkan (never a software
# one, never GL), then runs `specdef bench` on the GPU and the CPU engine over the cost-curve
# suite, draws the cost curves, and runs the criterion benches where cargo is there. Every figure
# is written with the adapter's name (the records' `adapter` and `driver` fields).
#
#   benches/gpu.sh                  # builds specdef with cargo
#   SPECDEF_BIN=path/to/specdef benches/gpu.sh   # a binary built elsewhere (no cargo needed)
#
# Loader packages: where `ldconfig -p` finds no libvulkan, .deb files under .gl/ (downloaded
# beforehand with `apt-get download libvulkan1`) are unpacked into /. NVIDIA's driver files are
# used from /usr/local/nvidia where the driver is installed there (containers often do this).
# Output: out/gpu/ (bench.jsonl, cost_curves.svg, criterion.txt, adapter.txt).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=out/gpu
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

echo "== specdef bench, GPU and CPU engines, cost-curve suite"
"$specdef" bench --engine gpu,cpu --suite curves --out "$out/bench.jsonl"
"$specdef" bench-plot "$out/bench.jsonl" --out "$out/cost_curves.svg"

if command -v cargo >/dev/null 2>&1; then
    echo "== criterion benches"
    cargo bench --bench matmul --bench attack_step --bench hvp 2>&1 | tee "$out/criterion.txt"
else
    echo "== no cargo here: criterion benches skipped"
fi
echo "== written: $out/"
