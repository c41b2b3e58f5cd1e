"""Model lifecycle through the fake harness: states, coalesced loads, memory, drain and cancel."""

from __future__ import annotations

import asyncio

import pytest

from cortex.config import FakeModel
from cortex.errors import (
    ConflictError,
    CortexError,
    InsufficientMemoryError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
)
from cortex.neuron import GenerateRequest, LoadEvent, SamplingOptions
from cortex.neuron.model_ids import check_model_id
from cortex.testing import FakeHarness

MODELS = [
    FakeModel(id="a", memory_mb=400, context_length=128),
    FakeModel(id="b", memory_mb=500, context_length=128),
    FakeModel(id="c", memory_mb=300, context_length=128),
]


def chat(model: str, text: str = "hello there", max_tokens: int | None = None) -> GenerateRequest:
    return GenerateRequest(
        model=model,
        messages=[{"role": "user", "content": text}],
        sampling=SamplingOptions(max_tokens=max_tokens),
    )


async def test_states_follow_a_load_and_an_unload() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, load_s=0.2)
    assert {e.id: e.state for e in harness.models()} == dict.fromkeys("abc", "available")
    load = asyncio.create_task(harness.load("a"))
    await asyncio.sleep(0.05)
    entry = harness.model("a")
    assert entry.state == "loading"
    assert entry.progress is not None and entry.progress["phase"] == "loading"
    assert (await load).state == "loaded"
    assert harness.model("a").progress is None
    assert harness.stats().memory_used_mb == 400
    entry = await harness.unload("a")
    assert entry.state == "available"
    assert harness.stats().memory_used_mb == 0
    assert harness.stats().load_cycles == 1


async def test_concurrent_loads_share_one_load_and_loads_are_idempotent() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, load_s=0.1)
    events: list[LoadEvent] = []
    harness.subscribe(events.append)
    entries = await asyncio.gather(*(harness.load("a") for _ in range(5)))
    assert [e.state for e in entries] == ["loaded"] * 5
    await harness.load("a")
    assert harness.opened == ["a"]
    assert harness.stats().loads_started == 1
    assert [(e.model, e.outcome) for e in events] == [("a", "ok")]


async def test_a_load_that_does_not_fit_is_refused_with_required_and_free_memory() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000)
    await harness.load("a")
    await harness.load("c")
    with pytest.raises(InsufficientMemoryError) as caught:
        await harness.load("b")
    assert caught.value.status == 507
    assert caught.value.required_mb == 500
    assert caught.value.free_mb == 300
    assert caught.value.to_openai()["error"]["required_mb"] == 500
    assert harness.model("b").state == "available"
    await harness.unload("c")
    assert (await harness.load("b")).state == "loaded"


async def test_loading_models_hold_their_memory_so_parallel_loads_cannot_overcommit() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, load_s=0.2)
    results = await asyncio.gather(
        harness.load("a"), harness.load("b"), harness.load("c"), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, InsufficientMemoryError)]
    assert len(refused) == 1
    assert harness.stats().memory_used_mb <= 1000


async def test_a_failed_load_shows_its_error_and_can_be_retried() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, fail_load=["b"])
    with pytest.raises(CortexError, match="injected load failure"):
        await harness.load("b")
    entry = harness.model("b")
    assert entry.state == "failed"
    assert entry.error is not None and "injected" in entry.error
    assert harness.stats().memory_used_mb == 0
    harness.fail_load = frozenset()
    assert (await harness.load("b")).state == "loaded"
    assert harness.model("b").error is None


async def test_unload_of_a_failed_model_makes_it_available() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, fail_load=["a"])
    with pytest.raises(CortexError):
        await harness.load("a")
    assert (await harness.unload("a")).state == "available"


async def test_unknown_and_path_like_ids_are_refused() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000)
    with pytest.raises(ModelNotFoundError):
        await harness.load("nope")
    for bad in ("../a", "/etc/passwd", "a/../../b", "~root", "a\\b", "a\x00", "", "x/./y"):
        with pytest.raises(InvalidRequestError):
            await harness.load(bad)
    assert check_model_id("org/name") == "org/name"


async def test_generating_on_a_model_not_loaded_names_the_loaded_ones() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000)
    await harness.load("a")
    with pytest.raises(ModelNotFoundError) as caught:
        harness.generate(chat("b"))
    assert "loaded models: a" in caught.value.message
    assert caught.value.details["loaded_models"] == ["a"]


async def test_unload_waits_for_in_flight_requests_to_finish() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, tokens_per_s=100)
    await harness.load("a")
    stream = harness.generate(chat("a", max_tokens=10))
    assert harness.model("a").in_flight == 1

    async def consume() -> str:
        async with stream:
            return "".join([event.text async for event in stream])

    reader = asyncio.create_task(consume())
    await asyncio.sleep(0.02)
    entry = await harness.unload("a", drain_timeout_s=10)
    assert entry.state == "available"
    text = await reader
    assert text == "This is a on fake. You said: hello there"  # whole, before the unload ended


async def test_unload_cancels_what_outlives_the_drain_timeout_with_a_clear_error() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, tokens_per_s=20, max_running=1)
    await harness.load("a")
    running = harness.generate(chat("a", max_tokens=100))
    queued = harness.generate(chat("a", max_tokens=100))
    first = await running.__anext__()
    assert first.token_count == 1
    waiting = asyncio.create_task(queued.__anext__())  # blocks: the fake runs one at a time
    await asyncio.sleep(0.05)
    assert harness.stats().waiting == 1

    unload = asyncio.create_task(harness.unload("a", drain_timeout_s=0.2))
    await asyncio.sleep(0.02)
    assert harness.model("a").state == "unloading"
    with pytest.raises(ConflictError):
        harness.generate(chat("a"))
    with pytest.raises(ConflictError):
        await harness.load("a")
    with pytest.raises(OverloadedError, match="drain timeout") as caught:
        await waiting  # cancelled while it waited in the queue
    assert caught.value.code == "model_unloaded"
    with pytest.raises(OverloadedError, match="was unloaded"):
        async for _ in running:
            pass
    assert (await unload).state == "available"
    assert harness.stats().running == 0
    assert harness.stats().waiting == 0


async def test_a_full_queue_is_refused_as_overloaded() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, max_running=1, max_waiting=0)
    await harness.load("a")
    running = harness.generate(chat("a", max_tokens=50))
    await running.__anext__()
    refused = harness.generate(chat("a"))
    with pytest.raises(OverloadedError) as caught:
        await refused.__anext__()
    assert caught.value.headers() == {"retry-after": "1"}
    assert harness.model("a").in_flight == 1  # the refused request let go of the model
    await running.aclose()
    assert harness.model("a").in_flight == 0


async def test_closing_a_stream_early_frees_its_place() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, tokens_per_s=50)
    await harness.load("a")
    stream = harness.generate(chat("a", max_tokens=50))
    await stream.__anext__()
    assert harness.stats().running == 1
    await stream.aclose()
    assert harness.stats().running == 0
    assert harness.model("a").in_flight == 0
    assert harness.model("a").last_used_at is not None


async def test_aclose_unloads_everything() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000)
    await harness.load("a")
    await harness.load("c")
    await harness.aclose(drain_timeout_s=1)
    assert {e.state for e in harness.models()} == {"available"}
    assert harness.stats().memory_used_mb == 0


async def test_queue_time_counts_each_request_once_and_preemptions_are_reported() -> None:
    harness = FakeHarness(MODELS, memory_mb=1000, tokens_per_s=200, max_running=1)
    await harness.load("a")

    async def ask() -> None:
        async for _ in harness.generate(chat("a", max_tokens=3)):
            pass

    await asyncio.gather(ask(), ask())  # the second waits for the first's slot
    stats = harness.stats()
    assert stats.queue_time["a"].count == 2
    assert stats.preemptions == {"a": 0}  # the fake never preempts; the engine's are counted
    await harness.unload("a")
    assert harness.stats().queue_time == {}  # only loaded models report
