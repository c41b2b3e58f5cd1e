"""Schemathesis against the neuron's own OpenAPI document (fake harness, in-process).

Valid requests must be accepted and answered as documented, invalid ones refused with a 4xx in
the OpenAI envelope, and nothing may answer 500.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from cortex.config import FakeModel
from cortex.neuron import create_neuron_app
from cortex.testing import FakeHarness

harness = FakeHarness([FakeModel(id="m", context_length=4096)], tokens_per_s=1e6, memory_mb=1e4)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_neuron_app(harness))
negative = schemathesis.openapi.from_asgi("/openapi.json", create_neuron_app(harness))
negative.config.generation.update(modes=[schemathesis.GenerationMode.NEGATIVE])
FUZZ = settings(
    max_examples=15, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)


def _context_exceeded(response: Any) -> bool:
    """A valid request whose prompt plus max_tokens exceed the context: 400 by design."""
    if response.status_code != 400:
        return False
    return bool(response.json()["error"]["code"] == "context_length_exceeded")


@schema.parametrize()
@FUZZ
def test_valid_requests_are_served_as_documented(case: Any) -> None:
    response = case.call()
    if not _context_exceeded(response):
        case.validate_response(response)


@negative.parametrize()
@FUZZ
def test_invalid_requests_are_refused_in_the_envelope(case: Any) -> None:
    response = case.call()
    case.validate_response(response)
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
