#!/usr/bin/env bash
# The native window check: under Xvfb (on lavapipe where there is no GPU) the app opens, runs
# the quick scenario on the window's own wgpu device, and renders; the screenshot is saved.
#
#   web/native_window_check.sh [SPECDEF_BINARY] [SCREENSHOT.png]
#
# Needs: xvfb-run and ImageMagick's `import` (Debian: apt-get install xvfb imagemagick).
set -euo pipefail
binary=${1:-target/release/specdef}
shot=${2:-target/native-window.png}
limit_s=${SPECDEF_WINDOW_LIMIT_S:-300}
for tool in xvfb-run import identify; do
    command -v "$tool" >/dev/null || { echo "native window check: $tool is not installed" >&2; exit 2; }
done
log=$(mktemp)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
xvfb-run -a -s "-screen 0 1280x800x24" bash -c '
    "$0" gui --run-quick >"$1" 2>&1 &
    app=$!
    for _ in $(seq "$2"); do
        grep -q "scenario finished" "$1" && break
        kill -0 "$app" 2>/dev/null || break
        sleep 1
    done
    sleep 1
    import -window root "$3" || true
    kill "$app" 2>/dev/null || true
' "$binary" "$log" "$limit_s" "$shot"
cat "$log"
grep -q "scenario finished: 28 attack runs" "$log" || { echo "native window check: the quick scenario did not finish" >&2; exit 1; }
# A rendered window has text and tables: far more than a handful of colours.
colours=$(identify -format %k "$shot")
[ "$colours" -gt 16 ] || { echo "native window check: the screenshot looks blank ($colours colours)" >&2; exit 1; }
echo "native window check passed: $shot ($colours colours)"
