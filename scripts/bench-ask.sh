#!/usr/bin/env bash
# Latency of `margin ask` per RAG mode over the index in the data directory:
# the first N questions of an NQ-style file, each asked in RAG-Token,
# RAG-Sequence thorough and RAG-Sequence fast decoding (k = 5, beams 4 by
# default: rag.n_docs, rag.beams); prints the median milliseconds per stage
# and the exact-match rate against the reference answers (SQuAD-normalised).
#
#   ./scripts/bench-ask.sh [QA_FILE] [N] [extra margin ask flags...]
#
# Needs an index (`margin index ../shared/eval/corpus.jsonl`) and the models.
set -euo pipefail
cd "$(dirname "$0")/.."
qa="${1:-../shared/eval/nq-dev.jsonl}"
n="${2:-10}"
shift $(( $# > 2 ? 2 : $# ))
extra=("$@")
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
margin="$target_dir/debug/margin"
out=$(mktemp -d)
for mode in "token" "sequence thorough" "sequence fast"; do
  read -r kind decoding <<< "$mode"
  flags=(--mode "$kind")
  if [ -n "$decoding" ]; then flags+=(--decoding "$decoding"); fi
  head -n "$n" "$qa" | while IFS= read -r line; do
    q=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["question"])' "$line")
    "$margin" --log error ask "$q" "${flags[@]}" "${extra[@]}" --json | python3 -c '
import json, sys
r = json.load(sys.stdin); ref = json.loads(sys.argv[1])
print(json.dumps({"timings": r["timings_ms"], "answer": r["answer"], "answers": ref.get("answers") or ref.get("answer") or ref.get("golden_answers")}))' "$line"
  done > "$out/${mode// /-}.jsonl"
done
python3 - "$out" <<'PY'
import json, re, statistics, string, sys, pathlib
def norm(s):
    s = s.lower()
    s = "".join(c for c in s if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())
print(f"{'mode':<20} {'n':>3} {'load':>6} {'retrieve':>9} {'prefill':>8} {'decode':>8} {'rescore':>8} {'attribute':>9} {'total':>8} {'contains':>8}")
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    med = lambda k: statistics.median(r["timings"][k] for r in rows)
    total = statistics.median(sum(v for k, v in r["timings"].items() if k != "load") for r in rows)
    hit = sum(any(norm(a) in norm(r["answer"]) for a in (r["answers"] if isinstance(r["answers"], list) else [r["answers"]])) for r in rows)
    print(f"{path.stem:<20} {len(rows):>3} {med('load'):>6.0f} {med('retrieve'):>9.0f} {med('prefill'):>8.0f} {med('decode'):>8.0f} {med('rescore'):>8.0f} {med('attribute'):>9.0f} {total:>8.0f} {hit:>5}/{len(rows)}")
PY
