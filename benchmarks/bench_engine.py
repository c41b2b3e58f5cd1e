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
    python benchmarks/bench_engine.py --dtypes bfloat16 --quants none,int8,int4 --engine \
        --peer-python /path/to/venv-with-llama-cpp-python/bin/python
    python benchmarks/bench_engine.py --model DIR [--make-tiny qwen3|qwen3_moe]

`--quants` adds a cortex row per weight-only quantization (`cortex.engine.quant`) of each dtype,
each with its own kernel-only ceiling; transformers runs the float weights only. `--engine`
adds, beside each cortex row, the batched `Engine` at batch 1 (one request through the
scheduler, the paged KV cache and the engine's worker thread, as the neuron serves it), so the
engine's overhead over the plain `Llama.generate` loop shows. `--peer-python` runs
llama-cpp-python's library (`Llama.generate`, its own threads set to torch's) on the model's
GGUF in that interpreter, in the same rounds; without it, or when it cannot import
`llama_cpp`, the peer is skipped with one line.

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
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cortex.engine.device import measured_policy, read_cpu_features
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


def load_ours(model_dir: Path, dtype: torch.dtype, quant: str | None = None) -> Llama:
    if has_tokenizer(model_dir):
        Tokenizer.from_dir(model_dir)  # part of getting ready to serve
    model = load_model(model_dir, dtype=dtype, quant=quant)
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


def run_eager(model: Llama) -> Run:
    """`run_ours` with the fused CPU decode step off (`CORTEX_CPU_FUSED=0`): the eager step."""
    fused = run_ours(model)

    def run(ids: list[int], n: int) -> list[float]:
        before = os.environ.get("CORTEX_CPU_FUSED")
        os.environ["CORTEX_CPU_FUSED"] = "0"
        try:
            return fused(ids, n)
        finally:
            if before is None:
                del os.environ["CORTEX_CPU_FUSED"]
            else:
                os.environ["CORTEX_CPU_FUSED"] = before

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


def serve_engine(model_dir: Path, dtype_name: str, quant: str | None) -> None:
    """`--serve-engine`: answer `{"ids", "n"}` lines on stdin with token times from `Engine`.

    Its own process, so that its worker thread is the only one running torch there, as in a
    neuron (see `cortex.engine.device.in_own_thread`): the benchmark's main thread runs the
    other engines, and a second thread computing in one process slows both.
    """
    import asyncio

    from cortex.engine.engine import Engine
    from cortex.engine.sampling import SamplingParams

    engine = Engine.from_pretrained(
        model_dir,
        dtype=getattr(torch, dtype_name),
        quant=quant,
        max_num_seqs=4,
        model_id="bench",
        enable_prefix_caching=False,  # every TTFT is a full prefill, as for the others
    )

    async def stamps(ids: list[int], n: int) -> list[float]:
        params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
        return [time.perf_counter() async for _ in engine.generate(ids, params)]

    async def serve() -> None:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            job = json.loads(line)
            print(json.dumps({"times": await stamps(job["ids"], job["n"])}), flush=True)

    asyncio.run(serve())
    engine.close()


# Runs in the peer's interpreter: llama-cpp-python's library on a GGUF, timestamps per token.
_LLAMA_CPP_SCRIPT = """
import json, sys, time
from llama_cpp import Llama
path, threads = sys.argv[1], int(sys.argv[2])
llm = Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
            n_batch=512, verbose=False)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    llm.reset()  # no reuse of the previous prompt's KV: every TTFT is a full prefill
    times = []
    for _ in llm.generate(job["ids"], top_k=1, top_p=1.0, temp=0.0, reset=True):
        times.append(time.perf_counter())
        if len(times) == job["n"]:
            break
    print(json.dumps({"times": times}), flush=True)
"""


class Peer:
    """A generator in another process, driven one generation at a time over JSON lines.

    Token times come from that process's `time.perf_counter` (one monotonic clock for every
    process on Linux), so TTFT counts from this process's start time like the other rows.
    """

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        json.loads(self.process.stdout.readline())  # loaded and ready

    def run(self, ids: list[int], n: int) -> list[float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"ids": ids, "n": n}) + "\n")
        self.process.stdin.flush()
        return list(json.loads(self.process.stdout.readline())["times"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.terminate()
        self.process.wait()


def engine_peer(model_dir: Path, dtype_name: str, quant: str | None, threads: int) -> Peer:
    """`Engine` at batch 1 in its own process (`serve_engine`)."""
    command = [sys.executable, __file__, "--serve-engine", "--model", str(model_dir)]
    command += ["--dtypes", dtype_name, "--quants", quant or "none", "--threads", str(threads)]
    return Peer(command)


def llama_cpp_peer(python: str | None, gguf: Path, threads: int) -> Peer | None:
    """llama-cpp-python's library on `gguf`, or None (one line says why) when it cannot run."""
    if python is None:
        print("# llama.cpp peer skipped: no --peer-python")
        return None
    check = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True, check=False)
    if check.returncode != 0:
        print(f"# llama.cpp peer skipped: {python} cannot import llama_cpp")
        return None
    return Peer([python, "-c", _LLAMA_CPP_SCRIPT, str(gguf), str(threads)])


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
    parser.add_argument("--quants", default="none", help="cortex rows: none,int8,int4...")
    parser.add_argument(
        "--engine", action="store_true", help="also time `Engine` at batch 1 (own process)"
    )
    parser.add_argument(
        "--eager-step",
        action="store_true",
        help="add Llama.generate with the fused CPU decode step off (CORTEX_CPU_FUSED=0)",
    )
    parser.add_argument("--peer-python", help="an interpreter with llama-cpp-python")
    parser.add_argument("--gguf", type=Path, help="the peer's GGUF (default: the default model's)")
    parser.add_argument("--serve-engine", action="store_true", help=argparse.SUPPRESS)
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
    if args.serve_engine:
        quant = None if args.quants == "none" else args.quants
        serve_engine(args.model, args.dtypes, quant)
        return
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
    threads = torch.get_num_threads()
    peer = None
    if args.model is None or args.gguf is not None:
        from cortex.engine.gguf import default_gguf_path

        gguf = args.gguf or default_gguf_path()
        peer = llama_cpp_peer(args.peer_python, gguf, threads)
        peer_label = gguf.name
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for quant in args.quants.split(","):
            label = dtype_name if quant == "none" else f"{dtype_name} {quant}"
            held = None if quant == "none" else quant
            loaders: dict[str, Callable[[Path, torch.dtype], Any]] = {
                "cortex": lambda d, t, q=held: load_ours(d, t, q)
            }
            if quant == "none":
                loaders["transformers"] = load_hf
            timings: dict[tuple[str, str], list[float]] = {}
            # Rounds alternate between the engines, and each keeps its best, so a busy moment
            # on a shared machine hits all of them alike.
            for _ in range(args.repeats):
                for engine, loader in loaders.items():
                    seconds = timed(loader, model_dir, dtype)
                    timings.setdefault((engine, "load"), []).append(seconds)
            ours = load_ours(model_dir, dtype, held)
            runners: dict[str, Run] = {"cortex": run_ours(ours)}
            if args.eager_step:
                runners["cortex, eager step"] = run_eager(ours)
            if quant == "none":
                runners["transformers"] = run_hf(load_hf(model_dir, dtype))
            closers = []
            if args.engine:
                served = engine_peer(model_dir, dtype_name, held, threads)
                runners["cortex Engine"] = served.run
                closers.append(served.close)
            if peer is not None and not any(engine == "llama.cpp" for engine, _ in rows):
                runners["llama.cpp"] = peer.run  # in the first dtype's rounds
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
            for close in closers:
                close()
            for engine in runners:
                stats = {}
                if (engine, "load") in timings:
                    stats["load_s"] = min(timings[(engine, "load")])
                for length in prompts:
                    stats[f"ttft_{length}_ms"] = min(timings[(engine, f"ttft_{length}")]) * 1e3
                    gap = statistics.median(timings[(engine, f"gaps_{length}")])
                    stats[f"decode_{length}_tok_s"] = 1 / gap
                rows[(engine, peer_label if engine == "llama.cpp" else label)] = stats
            ceiling = 1e3 / weight_pass_ms(ours, max(3, args.repeats))
            for engine in ("cortex", "cortex, eager step", "cortex Engine"):
                if (engine, label) in rows:
                    decode = rows[(engine, label)][f"decode_{PROMPT_LENGTHS[0]}_tok_s"]
                    rows[(engine, label)]["ceiling_tok_s"] = ceiling
                    rows[(engine, label)]["of_ceiling"] = decode / ceiling

            # How far this dtype and quant move from our first row on the 128-token prompt.
            logits = ours.forward(prompts[128])[-1]
            tokens = ours.generate(prompts[128], 32, stop_token_ids=())
            if reference is None:
                reference = (logits, tokens)
            same = next(
                (i for i, (a, b) in enumerate(zip(tokens, reference[1], strict=True)) if a != b),
                len(tokens),
            )
            first = args.dtypes.split(",")[0]
            exactness[label] = (
                f"max |logit - {first}| {(logits - reference[0]).abs().max().item():.3f}, "
                f"greedy equal to {first} for {same}/32 tokens"
            )
            del ours, runners
    if peer is not None:
        peer.close()

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
    cpu = read_cpu_features().model_name or "unknown CPU"
    print(
        f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}, "
        f"{new_tokens} decode tokens, best of {args.repeats}"
    )
    print()
    print("| engine | dtype | " + " | ".join(c[1] for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for (engine, dtype), stats in rows.items():
        cells = [c[2].format(stats[c[0]]) if c[0] in stats else "" for c in columns]
        print(f"| {engine} | {dtype} | " + " | ".join(cells) + " |")

    def ratios(title: str, ours: dict[str, float], theirs: dict[str, float], label: str) -> None:
        cells = []
        for key, _, _, higher_is_better in columns:
            if key in ours and key in theirs and key not in ("import_s", "load_s"):
                ratio = ours[key] / theirs[key] if higher_is_better else theirs[key] / ours[key]
                cells.append(f"{ratio:.2f}x")
            else:
                cells.append("")
        print(f"| **{title}** | {label} | " + " | ".join(cells) + " |")

    peer = next((stats for (engine, _), stats in rows.items() if engine == "llama.cpp"), None)
    for (engine, label), stats in rows.items():
        if label == "-":  # the import-time rows
            continue
        if engine == "cortex" and ("transformers", label) in rows:
            ratios("cortex / transformers", stats, rows[("transformers", label)], label)
        if engine == "cortex" and ("cortex, eager step", label) in rows:
            ratios("fused / eager step", stats, rows[("cortex, eager step", label)], label)
        if engine == "cortex Engine" and ("cortex", label) in rows:
            ratios("Engine / Llama.generate", stats, rows[("cortex", label)], label)
        if engine.startswith("cortex") and peer is not None:
            ratios(f"{engine} / llama.cpp", stats, peer, label)
    print()
    for dtype, text in exactness.items():
        print(f"- cortex {dtype}: {text}")
    print()
    print("command: python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]))


if __name__ == "__main__":
    main()
