"""Batch-1 engine benchmark: import, load, TTFT and greedy decode speed, beside transformers.

Both run the same weights (the default model folder, SmolLM2-135M-Instruct imported from its
GGUF) on this machine in the same process, interleaved, so the ratios hold even when the
machine is busy. Each run is one greedy `generate(prompt, 1 + N)` (end-of-turn ignored) that
timestamps every token as it is chosen (our `on_token`, transformers' `streamer`): TTFT is the
time to the first token (best run), decode speed comes from the median time between tokens
over all runs, which a burst of load from elsewhere barely moves.
Each cortex row also prints the kernel-only ceiling: one row through every matrix a decode
step reads (`weight_pass_ms`, the same `linear` calls and device policy), as tok/s, and how
close batch-1 decode comes to it (the aim: within 1.3x, i.e. a ratio of 0.77 or more).

    python benchmarks/bench_engine.py [--dtypes float32,bfloat16] [--new-tokens 32] [--repeats 2]
    python benchmarks/bench_engine.py --model DIR [--make-tiny qwen3|qwen3_moe]

`--model DIR` runs any model folder instead of the default (random prompt ids when it has no
tokenizer); `--make-tiny` first writes a small random Qwen3 or Qwen3-MoE checkpoint there with
transformers (the two have the same attention and about the same active parameters, so their
gap is the cost of routing tokens to experts).

`--grammar` measures structured output's mask cost per token at batch 1 and 16
(`benchmarks/bench_grammar.py`).
`--batched` runs the batched `Engine` benchmark instead (`benchmarks/bench_engine_batch.py`:
concurrent requests, TTFT through the scheduler, aggregate tok/s at 1-64 requests).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cortex.engine.device import measured_policy
from cortex.engine.gguf import default_model_dir
from cortex.engine.models import Llama, LlamaConfig, load_model
from cortex.engine.models.llama import MLP, Attention, linear
from cortex.engine.tokenizer import Tokenizer

PROMPT_LENGTHS = (128, 1024)
TEXT = (
    "The history of bread goes back at least 30,000 years. Early people ground grains into "
    "flour, mixed it with water and baked flat cakes on hot stones. Leavened bread came later, "
    "when wild yeasts drifted into dough and made it rise; Egyptian bakers learned to keep a "
    "piece of old dough to start the next batch. "
)


def timed(run: Callable[..., object], *args: Any) -> float:
    """Wall time of `run(*args)`, in seconds."""
    start = time.perf_counter()
    run(*args)
    return time.perf_counter() - start


def import_time(statement: str, repeats: int) -> float:
    """Seconds a fresh interpreter spends on `statement` (startup excluded)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return min(runs)


# Small random checkpoints for `--make-tiny`: the MoE runs 4 of 32 experts whose width makes
# its active parameters about the dense model's.
_TINY_SHAPE = {
    "vocab_size": 8192,
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen3": {**_TINY_SHAPE, "model_type": "qwen3", "intermediate_size": 1536},
    "qwen3_moe": {
        **_TINY_SHAPE,
        "model_type": "qwen3_moe",
        "intermediate_size": 1536,
        "num_experts": 32,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 384,
        "norm_topk_prob": True,
    },
}


def make_tiny(kind: str, model_dir: Path) -> None:
    """Write a random `TINY_CONFIGS[kind]` checkpoint into `model_dir` with transformers."""
    import transformers

    model_dir.mkdir(parents=True, exist_ok=True)
    config = transformers.AutoConfig.for_model(**TINY_CONFIGS[kind])
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=torch.float32
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.05)
    model.save_pretrained(model_dir)


def has_tokenizer(model_dir: Path) -> bool:
    return (model_dir / "tokenizer.json").is_file()


def cpu_model() -> str:
    """The CPU's model name (Linux), for the table's header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load_ours(model_dir: Path, dtype: torch.dtype) -> Llama:
    if has_tokenizer(model_dir):
        Tokenizer.from_dir(model_dir)  # part of getting ready to serve
    model = load_model(model_dir, dtype=dtype)
    model.apply_policy(measured_policy("cpu", dtype))  # as the Engine runs it on this machine
    return model


def weight_pass_ms(model: Llama, repeats: int) -> float:
    """The kernel-only ceiling of a decode step: one row through every matrix it reads (ms).

    Each q/k/v, o, gate/up, down and the LM head, through `linear` with the model's policy, as a
    batch-1 step runs them; best of `repeats` passes. Decode cannot beat `1000 / this` tok/s.
    """
    matrices: list[Any] = [model.lm_head]
    for module in model.modules():
        if isinstance(module, Attention):
            matrices += [module.qkv_weight, module.o_weight]
        elif isinstance(module, MLP):
            matrices += [module.gate_up_weight, module.down_weight]
    rows = [
        torch.zeros(1, int(getattr(w, "in_features", 0) or w.shape[1]), dtype=model.dtype)
        for w in matrices
    ]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass warms up
            start = time.perf_counter()
            for weight, row in zip(matrices, rows, strict=True):
                linear(row, weight, None, model.policy)
            best = min(best, time.perf_counter() - start)
    return best * 1e3


def load_hf(model_dir: Path, dtype: torch.dtype) -> Any:
    import transformers

    if has_tokenizer(model_dir):
        transformers.AutoTokenizer.from_pretrained(model_dir)
    model: Any = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    return model.eval()


Run = Callable[[list[int], int], list[float]]
"""`run(prompt, n)` generates n tokens and returns the time each one was chosen."""


class _Stamps:
    """A transformers streamer that only notes when each new token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True  # the first call carries the prompt

    def end(self) -> None:
        pass


def run_ours(model: Llama) -> Run:
    def run(ids: list[int], n: int) -> list[float]:
        times: list[float] = []
        model.generate(
            ids, n, stop_token_ids=(), on_token=lambda _: times.append(time.perf_counter())
        )
        return times

    return run


def run_hf(model: Any) -> Run:
    def run(ids: list[int], n: int) -> list[float]:
        stamps = _Stamps()
        with torch.inference_mode():
            model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
                streamer=stamps,
            )
        return stamps.times

    return run


def prompt_ids(tokenizer: Tokenizer | None, length: int, vocab_size: int) -> list[int]:
    if tokenizer is None:  # a random checkpoint: random ids do as well as text
        generator = torch.Generator().manual_seed(length)
        return torch.randint(3, vocab_size, (length,), generator=generator).tolist()
    ids = tokenizer.encode(TEXT * (length // 40 + 1))
    return ids[:length]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--model", type=Path, help="a model folder (default: SmolLM2-135M)")
    parser.add_argument(
        "--make-tiny",
        choices=sorted(TINY_CONFIGS),
        help="first write a small random checkpoint of this kind into --model",
    )
    parser.add_argument(
        "--batched",
        action="store_true",
        help="measure the batched Engine instead (bench_engine_batch.py; pass its options)",
    )
    parser.add_argument(
        "--grammar",
        action="store_true",
        help="measure structured output's mask cost per token (benchmarks/bench_grammar.py)",
    )
    if "--grammar" in sys.argv[1:]:
        import bench_grammar  # the sibling script

        bench_grammar.main([a for a in sys.argv[1:] if a != "--grammar"])
        return
    if "--batched" in sys.argv[1:]:
        import bench_engine_batch  # the sibling script: python puts benchmarks/ on sys.path

        bench_engine_batch.main([a for a in sys.argv[1:] if a != "--batched"])
        return
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    if args.make_tiny:
        if args.model is None:
            parser.error("--make-tiny needs --model DIR")
        make_tiny(args.make_tiny, args.model)
    model_dir = args.model or default_model_dir(progress=False)
    tokenizer = Tokenizer.from_dir(model_dir) if has_tokenizer(model_dir) else None
    vocab_size = LlamaConfig.from_dir(model_dir).vocab_size
    prompts = {n: prompt_ids(tokenizer, n, vocab_size) for n in PROMPT_LENGTHS}
    new_tokens = args.new_tokens
    load_before = os.getloadavg()[0]

    rows: dict[tuple[str, str], dict[str, float]] = {}
    rows[("cortex", "-")] = {
        "import_s": import_time(
            "from cortex.engine import load_model, Tokenizer; load_model, Tokenizer", args.repeats
        )
    }
    rows[("transformers", "-")] = {
        "import_s": import_time(
            "from transformers import LlamaForCausalLM, AutoTokenizer; "
            "LlamaForCausalLM, AutoTokenizer",
            args.repeats,
        )
    }
    exactness: dict[str, str] = {}
    reference: tuple[torch.Tensor, list[int]] | None = None
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        loaders = {"cortex": load_ours, "transformers": load_hf}
        timings: dict[tuple[str, str], list[float]] = {}
        # Rounds alternate between the engines, and each keeps its best, so a busy moment on a
        # shared machine hits both alike.
        for _ in range(args.repeats):
            for engine, loader in loaders.items():
                timings.setdefault((engine, "load"), []).append(timed(loader, model_dir, dtype))
        runners = {
            "cortex": run_ours(load_ours(model_dir, dtype)),
            "transformers": run_hf(load_hf(model_dir, dtype)),
        }
        for length, ids in prompts.items():
            for run in runners.values():
                run(ids, 2)  # warm-up
            for _ in range(args.repeats):
                for engine, run in runners.items():
                    start = time.perf_counter()
                    times = run(ids, 1 + new_tokens)
                    timings.setdefault((engine, f"ttft_{length}"), []).append(times[0] - start)
                    gaps = [b - a for a, b in itertools.pairwise(times)]
                    timings.setdefault((engine, f"gaps_{length}"), []).extend(gaps)
        for engine in loaders:
            stats = {"load_s": min(timings[(engine, "load")])}
            for length in prompts:
                stats[f"ttft_{length}_ms"] = min(timings[(engine, f"ttft_{length}")]) * 1e3
                gap = statistics.median(timings[(engine, f"gaps_{length}")])
                stats[f"decode_{length}_tok_s"] = 1 / gap
            rows[(engine, dtype_name)] = stats
        ours = load_ours(model_dir, dtype)
        ceiling = 1e3 / weight_pass_ms(ours, max(3, args.repeats))
        rows[("cortex", dtype_name)]["ceiling_tok_s"] = ceiling
        rows[("cortex", dtype_name)]["of_ceiling"] = (
            rows[("cortex", dtype_name)][f"decode_{PROMPT_LENGTHS[0]}_tok_s"] / ceiling
        )

        # How far this dtype moves from our float32 on the 128-token prompt.
        logits = ours.forward(prompts[128])[-1]
        tokens = ours.generate(prompts[128], 32, stop_token_ids=())
        if reference is None:
            reference = (logits, tokens)
        same = next(
            (i for i, (a, b) in enumerate(zip(tokens, reference[1], strict=True)) if a != b),
            len(tokens),
        )
        exactness[dtype_name] = (
            f"max |logit - float32| {(logits - reference[0]).abs().max().item():.3f}, "
            f"greedy equal to float32 for {same}/32 tokens"
        )
        del ours, runners

    print_table(rows, args, load_before, new_tokens, exactness)


def print_table(
    rows: dict[tuple[str, str], dict[str, float]],
    args: argparse.Namespace,
    load_before: float,
    new_tokens: int,
    exactness: dict[str, str],
) -> None:
    columns = [
        ("import_s", "import s", "{:.2f}", False),
        ("load_s", "load s", "{:.2f}", False),
        *[(f"ttft_{n}_ms", f"TTFT {n} ms", "{:.0f}", False) for n in PROMPT_LENGTHS],
        *[(f"decode_{n}_tok_s", f"decode@{n} tok/s", "{:.1f}", True) for n in PROMPT_LENGTHS],
        ("ceiling_tok_s", "weights-only ceiling tok/s", "{:.1f}", True),
        ("of_ceiling", f"decode@{PROMPT_LENGTHS[0]} / ceiling", "{:.2f}", True),
    ]
    model = LlamaConfig.from_dir(args.model) if args.model else None
    if model is not None:
        print(
            f"model {args.model}: {model.architecture}, {model.parameters / 1e6:.1f}M parameters, "
            f"{model.active_parameters / 1e6:.1f}M active"
        )
    print(
        f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}, "
        f"{new_tokens} decode tokens, best of {args.repeats}"
    )
    print()
    print("| engine | dtype | " + " | ".join(c[1] for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for (engine, dtype), stats in rows.items():
        cells = [c[2].format(stats[c[0]]) if c[0] in stats else "" for c in columns]
        print(f"| {engine} | {dtype} | " + " | ".join(cells) + " |")
    for dtype in dict.fromkeys(d for _, d in rows):
        ours, theirs = rows.get(("cortex", dtype)), rows.get(("transformers", dtype))
        if ours is None or theirs is None:
            continue
        cells = []
        for key, _, _, higher_is_better in columns:
            if key in ours and key in theirs:
                ratio = ours[key] / theirs[key] if higher_is_better else theirs[key] / ours[key]
                cells.append(f"{ratio:.2f}x")
            else:
                cells.append("")
        print(f"| **cortex speed-up** | {dtype} | " + " | ".join(cells) + " |")
    print()
    for dtype, text in exactness.items():
        print(f"- cortex {dtype}: {text}")
    print()
    print("command: python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]))


if __name__ == "__main__":
    main()
