"""The one body reader both servers share: what it refuses, and the field it names."""

from __future__ import annotations

import pytest

from cortex.errors import InvalidRequestError
from cortex.jsonbody import lone_surrogate_path, parse_json_object


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (rb'{"a": "\ud800"}', "a"),
        (rb'{"messages": [{"content": "x\udc00y"}]}', "messages[0].content"),
        (rb'{"m": [1, {"k": ["\uDFFF"]}]}', "m[1].k[0]"),
        ('{"a": "\ud800"}'.encode("utf-8", "surrogatepass"), "a"),  # UTF-8 encoded, not escaped
        (rb'{"\ud800": 1}', "\\ud800"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_its_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_json_object(raw)
    assert caught.value.param == field
    assert field in caught.value.message
    caught.value.message.encode()  # the refusal itself can be sent


def test_surrogate_pairs_are_characters() -> None:
    assert parse_json_object(rb'{"a": "\ud83d\ude00", "\ud83d\ude00": 1}') == {
        "a": "\U0001f600",
        "\U0001f600": 1,
    }
    assert lone_surrogate_path({"a": ["\U0001f600", "plain"]}) is None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    with pytest.raises(InvalidRequestError, match=constant):
        parse_json_object(f'{{"temperature": {constant}}}'.encode())
