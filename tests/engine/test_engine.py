"""The Engine on the real SmolLM2-135M (float32): batching, prefix cache, preemption, sampling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine.engine import Engine, TokenEvent
from cortex.engine.sampling import SamplingParams, apply_penalties
from cortex.engine.tokenizer import Tokenizer
from cortex.errors import ContextLengthExceededError, OverloadedError

from ..helpers import until

GREEDY = SamplingParams(temperature=0.0, max_tokens=5)


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(default_model_dir)


@pytest.fixture(scope="module")
def engine(smollm2: Any, tokenizer: Tokenizer) -> Iterator[Engine]:
    engine = Engine(smollm2, tokenizer, kv_cache_mb=48, max_num_seqs=32, max_num_batched_tokens=256)
    yield engine
    engine.close()


def prompts(tokenizer: Tokenizer, count: int) -> list[list[int]]:
    """Chat prompts of mixed lengths (about 30 to 150 tokens)."""
    topics = ["rivers", "bread", "the moon", "chess", "volcanoes", "owls", "glass", "tea"]
    result = []
    for i in range(count):
        detail = " Please be precise and mention one fact." * (i % 5 * 2)
        messages = [{"role": "user", "content": f"Tell me about {topics[i % 8]}.{detail}"}]
        result.append(tokenizer.apply_chat_template(messages))
    return result


async def collect(stream: AsyncIterator[TokenEvent]) -> list[TokenEvent]:
    return [event async for event in stream]


def token_ids(events: list[TokenEvent]) -> list[int]:
    return [e.token_id for e in events if e.token_id is not None]


async def test_concurrent_greedy_equals_batch_one(engine: Engine, tokenizer: Tokenizer) -> None:
    batch = prompts(tokenizer, 16)
    assert len({len(p) for p in batch}) >= 5  # mixed lengths
    alone = [token_ids(await collect(engine.generate(p, GREEDY))) for p in batch]
    together = await asyncio.gather(*(collect(engine.generate(p, GREEDY)) for p in batch))
    assert [token_ids(events) for events in together] == alone
    for events in together:
        final = events[-1]
        assert final.token_id is None and final.finish_reason in ("stop", "length")
        assert final.usage is not None and final.usage.prompt_tokens > 0
        assert all(e.finish_reason is None for e in events[:-1])
    assert engine.stats().kv_blocks_used == 0


async def test_batch_one_matches_the_models_own_generate(engine: Engine, smollm2: Any) -> None:
    prompt = prompts(engine.tokenizer, 3)[2]
    events = await collect(engine.generate(prompt, GREEDY))
    assert token_ids(events) == smollm2.generate(prompt, 6)[: len(token_ids(events))]


async def test_text_is_the_decoded_output_and_chat_prompts_work(engine: Engine) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    params = SamplingParams(temperature=0.0, max_tokens=12)
    events = await collect(engine.generate(messages, params))
    text = "".join(e.text for e in events)
    assert "Paris" in text
    assert text == engine.tokenizer.decode(token_ids(events), skip_special_tokens=True)
    assert events[-1].usage is not None
    assert events[-1].usage.prompt_tokens == engine.count_prompt_tokens(messages)
    assert events[-1].usage.completion_tokens == len(token_ids(events)) + (
        events[-1].finish_reason == "stop"  # the end-of-turn token counts but is not shown
    )


async def test_prefix_cache_hit_gives_the_cold_output(engine: Engine, tokenizer: Tokenizer) -> None:
    system = "You are a careful assistant who answers about ferns. " * 6
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "How do ferns reproduce?"},
    ]
    cold = await collect(engine.generate(messages, GREEDY))
    warm = await collect(engine.generate(messages, GREEDY))
    assert token_ids(warm) == token_ids(cold)
    cold_usage, warm_usage = cold[-1].usage, warm[-1].usage
    assert cold_usage is not None and warm_usage is not None
    assert cold_usage.cached_tokens == 0
    # Every full block but the one holding the last prompt token is reused.
    block = engine.stats().block_size
    assert warm_usage.cached_tokens == (warm_usage.prompt_tokens - 1) // block * block
    assert warm_usage.prompt_tokens - warm_usage.cached_tokens <= block  # prefill skipped
    # A new question after the same system prompt reuses the system prompt's blocks.
    other = [messages[0], {"role": "user", "content": "Where do ferns grow?"}]
    third = await collect(engine.generate(other, GREEDY))
    assert third[-1].usage is not None and third[-1].usage.cached_tokens >= 64


async def test_preemption_under_a_small_kv_budget_keeps_outputs(
    engine: Engine, smollm2: Any, tokenizer: Tokenizer
) -> None:
    # Plain text without a chat template: no shared prefix blocks soften the squeeze.
    openings = ["Once upon a time", "The recipe begins", "In the year 1850", "Dear diary, today"]
    batch = [
        tokenizer.encode(f"{text}, " + "and then " * (8 + 4 * i)) for i, text in enumerate(openings)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    expected = [token_ids(await collect(engine.generate(p, params))) for p in batch]
    # 9 blocks = 144 token slots; together the four requests need 14 blocks.
    assert sum(-(-(len(p) + 12) // 16) for p in batch) >= 12
    small = Engine(
        smollm2,
        tokenizer,
        kv_cache_mb=9 * 16 * engine.kv_bytes_per_token / 2**20,
        max_num_seqs=8,
        max_num_batched_tokens=128,
    )
    try:
        assert small.stats().kv_blocks_total == 9
        results = await asyncio.gather(*(collect(small.generate(p, params)) for p in batch))
        assert [token_ids(events) for events in results] == expected
        assert small.stats().preemptions > 0
        assert small.stats().kv_blocks_used == 0
        assert small.stats().queue_time.count == 4  # each request once, preempted or not
    finally:
        small.close()


async def test_stop_string_spanning_tokens_is_cut(engine: Engine, tokenizer: Tokenizer) -> None:
    prompt = prompts(tokenizer, 1)[0]
    params = SamplingParams(temperature=0.0, max_tokens=16)
    plain = await collect(engine.generate(prompt, params))
    pieces = [e.text for e in plain[:-1]]
    # A stop string made of the end of one token's text and the start of the next one's.
    index = next(i for i in range(3, len(pieces) - 1) if len(pieces[i]) >= 2 and pieces[i + 1])
    stop = pieces[index][-2:] + pieces[index + 1][:2]
    full = "".join(pieces)
    stopped = await collect(
        engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=16, stop=(stop,)))
    )
    text = "".join(e.text for e in stopped)
    assert text == full[: full.index(stop)]
    assert stopped[-1].finish_reason == "stop"
    assert stop not in text and len(stopped) >= 3  # several tokens streamed before the stop
    # Stop token ids end the request at that token, which adds no text.
    third = token_ids(plain)[2]
    by_id = await collect(
        engine.generate(
            prompt, SamplingParams(temperature=0.0, max_tokens=16, stop_token_ids=(third,))
        )
    )
    assert token_ids(by_id) == token_ids(plain)[:2]
    assert by_id[-1].finish_reason == "stop" and by_id[-1].usage is not None
    assert by_id[-1].usage.completion_tokens == 3


async def test_max_tokens_and_ignore_eos(engine: Engine) -> None:
    messages = [{"role": "user", "content": "Say hi."}]
    short = await collect(engine.generate(messages, SamplingParams(temperature=0, max_tokens=2)))
    assert len(token_ids(short)) == 2 and short[-1].finish_reason == "length"
    plain = await collect(engine.generate(messages, SamplingParams(temperature=0, max_tokens=40)))
    assert plain[-1].finish_reason == "stop"  # the model ends its turn on its own
    eos_free = await collect(
        engine.generate(
            messages,
            SamplingParams(temperature=0, max_tokens=len(token_ids(plain)) + 3, ignore_eos=True),
        )
    )
    assert eos_free[-1].finish_reason == "length"
    assert len(token_ids(eos_free)) == len(token_ids(plain)) + 3


async def test_seeded_sampling_is_reproducible_across_batches(
    engine: Engine, tokenizer: Tokenizer
) -> None:
    prompt = prompts(tokenizer, 2)[1]
    params = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=1234, max_tokens=8)
    alone = token_ids(await collect(engine.generate(prompt, params)))
    others = [
        engine.generate(p, SamplingParams(temperature=1.0, seed=i, max_tokens=8, min_p=0.05))
        for i, p in enumerate(prompts(tokenizer, 6))
    ]
    crowd = await asyncio.gather(collect(engine.generate(prompt, params)), *map(collect, others))
    assert token_ids(crowd[0]) == alone
    other_seed = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=99, max_tokens=8)
    assert token_ids(await collect(engine.generate(prompt, other_seed))) != alone


async def test_logprobs_are_log_softmax_of_the_reference_logits(
    engine: Engine, smollm2: Any, tokenizer: Tokenizer
) -> None:
    prompt = prompts(tokenizer, 1)[0]
    params = SamplingParams(temperature=0.0, max_tokens=4, logprobs=True, top_logprobs=3)
    events = (await collect(engine.generate(prompt, params)))[:-1]
    generated = token_ids(events)
    logits = smollm2.forward(prompt + generated)  # (tokens, vocab)
    reference = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    for row, event in enumerate(events):
        assert event.logprobs is not None and len(event.logprobs) == 1
        entry = event.logprobs[0]
        assert entry.token_id == generated[row]
        assert entry.logprob == pytest.approx(reference[row, entry.token_id].item(), abs=1e-4)
        top = reference[row].topk(3)
        assert [e.token_id for e in entry.top_logprobs] == top.indices.tolist()
        assert [e.logprob for e in entry.top_logprobs] == pytest.approx(
            top.values.tolist(), abs=1e-4
        )
    # Greedy picks the most likely token.
    assert all(
        e.logprobs and e.logprobs[0].token_id == e.logprobs[0].top_logprobs[0].token_id
        for e in events
    )


async def test_penalties_follow_the_reference_on_the_real_model(
    engine: Engine, smollm2: Any, tokenizer: Tokenizer
) -> None:
    prompt = prompts(tokenizer, 1)[0]
    params = SamplingParams(
        temperature=0.0,
        max_tokens=6,
        repetition_penalty=1.3,
        frequency_penalty=0.5,
        presence_penalty=0.3,
    )
    got = token_ids(await collect(engine.generate(prompt, params)))
    # Reference: full forward each step, penalties over prompt and output, then argmax.
    output: list[int] = []
    for _ in got:
        logits = smollm2.forward(prompt + output)[-1:]
        output.append(int(apply_penalties(logits, [params], [prompt], [output]).argmax()))
    assert got == output


async def test_cancelled_requests_return_the_allocator_to_baseline(
    engine: Engine, tokenizer: Tokenizer
) -> None:
    baseline = engine.stats().kv_blocks_used
    params = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
    prompt = prompts(tokenizer, 4)[3]

    async for event in engine.generate(prompt, params):
        assert event.token_id is not None
        break  # the client went away after one token
    await until(lambda: engine.stats().running == 0)

    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(prompt, params):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: engine.stats().running == 0 and engine.stats().waiting == 0)
    assert engine.stats().kv_blocks_used == baseline


async def test_waiting_queue_limit_raises_overloaded(smollm2: Any, tokenizer: Tokenizer) -> None:
    busy = Engine(smollm2, tokenizer, kv_cache_mb=16, max_num_seqs=1, max_waiting=2)
    try:
        long = SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
        first = busy.generate([1, 2, 3], long)
        await first.__anext__()  # running now
        queued = [busy.generate([4, 5, 6], long) for _ in range(2)]
        tasks = [asyncio.create_task(q.__anext__()) for q in queued]
        await until(lambda: busy.stats().waiting == 2)
        with pytest.raises(OverloadedError) as info:
            await busy.generate([7, 8], long).__anext__()
        assert info.value.status_for("anthropic") == 529
        await first.aclose()
        for task in tasks:
            task.cancel()
    finally:
        busy.close()


async def test_context_overflow_is_refused_before_scheduling(engine: Engine) -> None:
    limit = engine.context_length
    with pytest.raises(ContextLengthExceededError) as info:
        await engine.generate([1] * (limit - 10), SamplingParams(max_tokens=11)).__anext__()
    assert (info.value.input_tokens, info.value.max_tokens) == (limit - 10, 11)
    assert engine.stats().waiting == 0 and engine.stats().running == 0


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def test_close_frees_the_model_and_kv_memory(default_model_dir: Path) -> None:
    before = rss_bytes()
    local = Engine.from_pretrained(default_model_dir, dtype="float32", kv_cache_mb=256)
    await collect(local.generate([1, 2, 3], SamplingParams(temperature=0, max_tokens=2)))
    loaded = rss_bytes()
    assert loaded - before > 500 * 2**20  # weights (540 MB) and the touched KV cache
    local.close()
    local.close()  # idempotent
    after = rss_bytes()
    assert after - before < 0.15 * (loaded - before)
    assert local.closed
    with pytest.raises(RuntimeError):
        await local.generate([1, 2], GREEDY).__anext__()


@pytest.mark.gpu
async def test_cuda_graph_decode_matches_eager_decode(default_model_dir: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    options: dict[str, Any] = {"device": "cuda", "dtype": "float32", "kv_cache_mb": 256}
    graphed = Engine.from_pretrained(default_model_dir, max_num_seqs=8, **options)
    eager = Engine.from_pretrained(default_model_dir, use_cuda_graphs=False, **options)
    try:
        assert graphed.stats().cuda_graphs == (1, 2, 4, 8)
        assert eager.stats().cuda_graphs == ()
        batch = prompts(graphed.tokenizer, 5)
        params = SamplingParams(temperature=0.0, max_tokens=16)
        runs = []
        for engine in (graphed, eager):
            results = await asyncio.gather(*(collect(engine.generate(p, params)) for p in batch))
            runs.append([token_ids(events) for events in results])
        assert runs[0] == runs[1]
    finally:
        graphed.close()
        eager.close()
