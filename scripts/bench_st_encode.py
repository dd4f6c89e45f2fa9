"""sentence-transformers side of `margin bench encode` (docs/benchmarks.md).

Encodes the same passages margin encodes, with the same model, batch size and
input text ("title: text"), on the CPU, and prints passages/s and peak memory.

    margin ingest ../shared/eval/corpus.jsonl --passages-out /tmp/passages.jsonl
    python scripts/bench_st_encode.py data/models/all-minilm-l6-v2 /tmp/passages.jsonl --passages 2000 --batch-size 32
"""

import argparse
import json
import resource
import time

import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("passages_jsonl")
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    texts = []
    with open(args.passages_jsonl, encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            texts.append(f"{p['title']}: {p['text']}" if p["title"] else p["text"])
            if len(texts) == args.passages:
                break

    model = SentenceTransformer(args.model_dir, device="cpu")
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up, as margin does
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    seconds = time.perf_counter() - start
    assert len(vectors) == len(texts)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "impl": "sentence-transformers",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "max_length": model.max_seq_length,
        "passages": len(texts),
        "seconds": round(seconds, 3),
        "passages_per_second": round(len(texts) / seconds, 2),
        "peak_rss_mib": round(peak_mib, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
