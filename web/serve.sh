#!/usr/bin/env bash
# Builds the browser app and serves it on http://127.0.0.1:${PORT:-8080}/ (local only; nothing is
# fetched from the network). Open /?run=quick to start the quick scenario at once.
set -euo pipefail
cd "$(dirname "$0")/.."
web/build.sh
exec node web/serve.mjs "${SPECDEF_WEB_OUT:-web/dist}" "${PORT:-8080}"
