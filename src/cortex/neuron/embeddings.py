"""`POST /v1/embeddings` on a neuron: the request, the runner of an embedding model, the answer.

An embedding model (a sentence-transformers folder: a BERT-family encoder, its pooling and
normalisation) is loaded, evicted and listed like any model, with `kind: "embedding"`; its
`EmbeddingRunner` refuses generation (a chat or completion request to it is a 400 naming
`/v1/embeddings`), and a chat model refuses embeddings the same way.

Inputs are OpenAI's: a string, a list of strings, a list of token ids, or a list of lists of
token ids. `encoding_format` `float` gives lists of numbers, `base64` the little-endian float32
bytes in base64 (what the openai SDK asks for by default and decodes itself). `dimensions`
keeps the first N components (re-normalised when the model normalises), which is meaningful
only for a Matryoshka-trained model (OpenAI's text-embedding-3, nomic-embed-text-v1.5...):
`dimensions` is a 400 naming the model on any other (the model's own size excepted), below
the smallest size it was trained at, and above its size. A model is Matryoshka-trained when
its model card says so (`cortex.engine.embedder.matryoshka_dims`).
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from cortex.errors import InvalidRequestError
from cortex.neuron.requests import Integral, ModelId, TokenId
from cortex.neuron.types import GenerateRequest, GenerationEvent, ModelUsage

if TYPE_CHECKING:
    from cortex.engine.embedder import Embedder

__all__ = ["EmbeddingRequest", "EmbeddingRunner", "embeddings_body"]

_MB = 1024 * 1024
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: ModelId
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[
            list[Annotated[list[TokenId], Field(min_length=1)]],
            Field(min_length=1, max_length=MAX_INPUTS),
        ]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1), Integral] | None = None
    user: str | None = None

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: texts, or token-id lists."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [[int(t) for t in value]]
        return value  # type: ignore[return-value]


class EmbeddingRunner:
    """A loaded embedding model, as the registry holds it.

    Args:
        embedder: the loaded encoder.
    """

    kind = "embedding"

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._running = 0

    @property
    def context_length(self) -> int:
        """The longest input, in tokens (longer ones are truncated)."""
        return self.embedder.max_tokens

    @property
    def memory_mb(self) -> float:
        """The weights (an encoder keeps no KV cache)."""
        return self.embedder.weights_bytes / _MB

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        """Refused: an embedding model does not generate."""
        raise InvalidRequestError(
            f"model {request.model!r} is an embedding model: use POST /v1/embeddings",
            param="model",
        )

    def count_prompt_tokens(self, request: GenerateRequest) -> int:
        """Refused, as `generate`."""
        self.generate(request)
        return 0

    def usage(self) -> ModelUsage:
        """Requests being embedded now."""
        return ModelUsage(self._running, 0, 0.0)

    async def embed(self, inputs: list[str] | list[list[int]]) -> tuple[list[list[float]], int]:
        """The inputs' vectors (in order) and how many tokens they took (on a thread)."""
        from cortex.engine.device import in_own_thread  # see there: no lasting torch pools

        ids = self.embedder.tokenize(inputs)
        self._running += 1
        try:
            vectors = await anyio.to_thread.run_sync(in_own_thread, self.embedder.embed, ids)
        finally:
            self._running -= 1
        return vectors.tolist(), sum(len(i) for i in ids)

    @property
    def dimensions(self) -> int:
        """The length of the model's vectors."""
        return self.embedder.dimensions

    def check_dimensions(self, request: EmbeddingRequest) -> None:
        """Refuse a `dimensions` this model cannot make, before any work is done.

        Raises:
            InvalidRequestError: `dimensions` on a model not trained to be shortened, below
                the smallest size it was trained at, or above its size.
        """
        wanted, native = request.dimensions, self.dimensions
        if wanted is None or wanted == native:
            return
        trained = self.embedder.matryoshka
        if wanted > native:
            reason = f"its vectors have {native} dimensions"
        elif trained is None:
            reason = (
                f"it was not trained to be shortened (its model card declares no Matryoshka "
                f"training), so its vectors keep their {native} dimensions; leave `dimensions` out"
            )
        elif trained and wanted < trained[0]:
            reason = f"it was trained to be shortened to {trained[0]} to {native} dimensions"
        else:
            return
        raise InvalidRequestError(
            f"dimensions: model {request.model!r} cannot make vectors of {wanted} dimensions: "
            + reason,
            param="dimensions",
        )

    @property
    def normalizes(self) -> bool:
        """Whether vectors are L2-normalised."""
        return self.embedder.pooling.normalize

    async def close(self) -> None:
        """Drop the model (the registry frees the memory)."""
        del self.embedder


def _shorten(vector: list[float], dimensions: int, normalize: bool) -> list[float]:
    kept = vector[:dimensions]
    if normalize:
        norm = math.sqrt(sum(x * x for x in kept)) or 1.0
        kept = [x / norm for x in kept]
    return kept


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    import array

    packed = array.array("f", vector)  # float32, the machine's order (little-endian hosts)
    return base64.b64encode(packed.tobytes()).decode("ascii")


def embeddings_body(
    request: EmbeddingRequest,
    vectors: list[list[float]],
    tokens: int,
    *,
    native_dimensions: int,
    normalizes: bool,
) -> dict[str, Any]:
    """OpenAI's `CreateEmbeddingResponse` for `vectors` (shortened to `request.dimensions`,
    which `EmbeddingRunner.check_dimensions` allowed)."""
    dimensions = request.dimensions
    data = []
    for index, vector in enumerate(vectors):
        if dimensions is not None and dimensions < native_dimensions:
            vector = _shorten(vector, dimensions, normalizes)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": _encode(vector, request.encoding_format),
            }
        )
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
