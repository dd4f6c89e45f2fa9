#!/usr/bin/env bash
# Bounded load test of `margin serve` on loopback with wrk: 32 connections on
# /v1/search, then 8 on /v1/ask (RAG-Token, greedy, 3 passages, up to 16
# tokens), each for DURATION seconds (default 30), over the demo corpus with
# the default models. Fails on any error or non-2xx answer. Prints one RESULT
# line of JSON per phase (p50/p90/p99 in ms, requests/s).
#
# usage: scripts/load-test.sh [DURATION]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build -q -p margin-cli
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
margin="$target_dir/debug/margin"
"$margin" --log warn models pull >/dev/null

work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/data"
# The model cache is shared; the index is the test's own.
ln -s "$(cd data && pwd)/models" "$work/data/models"
"$margin" --log warn --data-dir "$work/data" serve --bind 127.0.0.1:0 --index corpora/demo > "$work/serve.out" &
server=$!
until grep -q "^margin ready" "$work/serve.out" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.out"; exit 1; }
  sleep 0.5
done
url=$(sed -n 's/^margin serving on \(.*\)\/$/\1/p' "$work/serve.out")
echo "server at $url (cores: $(nproc))"

status=0
run() {
  local name=$1 connections=$2 path=$3 body=$4
  echo "== $name: $connections connections, ${duration}s"
  LOAD_BODY="$body" wrk -t2 -c"$connections" -d"${duration}s" --timeout 120s --latency \
    -s scripts/load/post.lua "$url$path" | tee "$work/$name.txt"
  # wrk's summary: "N requests in", and "Non-2xx" / "Socket errors" lines on failure.
  if grep -q "Non-2xx\|Socket errors" "$work/$name.txt" \
     || ! grep -q '"errors": 0, "non_2xx": 0' "$work/$name.txt"; then
    echo "FAILED: $name had errors" >&2
    status=1
  fi
}
run search 32 /v1/search '{"query": "%s", "k": 10, "mode": "hybrid"}'
run ask 8 /v1/ask '{"question": "%s", "n_docs": 3, "beams": 1, "max_new_tokens": 16}'
curl -s "$url/metrics" | grep '^margin_ask_batch_questions_\(sum\|count\)' || true
exit $status
