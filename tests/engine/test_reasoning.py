"""Thought markers, the streaming thought splitter, and chats folded for strict templates."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import AddedToken, decoders, models
from tokenizers import Tokenizer as Backend

from cortex.engine.chat_layout import fold_layout
from cortex.engine.reasoning import ThinkMarkers, find_think_markers
from cortex.engine.tokenizer import Tokenizer

from ..neuron.reasoning_model import write_reasoning_model

MARKERS = ThinkMarkers()


def split(text: str, cuts: list[int], *, in_thought: bool = False) -> tuple[str, str]:
    splitter = MARKERS.splitter(in_thought=in_thought)
    reasoning = content = ""
    edges = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    for start, end in itertools.pairwise(edges):
        r, c = splitter.feed(text[start:end])
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    return reasoning + r, content + c


@pytest.mark.parametrize(
    ("text", "in_thought", "expected"),
    [
        ("<think>\nI plan.\n</think>\n\nHello.", False, ("I plan.", "Hello.")),
        ("I plan.\n</think>\n\nHello.", True, ("I plan.", "Hello.")),
        ("\n\n<think>a</think>b", False, ("a", "b")),
        ("Hello <think>x</think>", False, ("", "Hello <think>x</think>")),  # a thought is first
        ("<think>a</think>b<think>c", False, ("a", "b<think>c")),  # and comes once
        ("still thinking", True, ("still thinking", "")),  # cut by max_tokens
        ("half </thi", True, ("half </thi", "")),
        ("<thi", False, ("", "<thi")),
        ("", True, ("", "")),
        ("Answer only.", False, ("", "Answer only.")),
        ("    indented code", False, ("", "    indented code")),  # no thought: as written
        ("\n", False, ("", "\n")),
    ],
)
def test_splitter(text: str, in_thought: bool, expected: tuple[str, str]) -> None:
    assert split(text, [], in_thought=in_thought) == expected


@given(
    st.lists(st.sampled_from(["<think>", "</think>", "\n", " ", "a", "b<", "/thi", "nk>"])),
    st.lists(st.integers(0, 200), max_size=6),
    st.booleans(),
)
def test_every_split_of_the_text_gives_the_same_result(
    pieces: list[str], cuts: list[int], in_thought: bool
) -> None:
    text = "".join(pieces)
    assert split(text, cuts, in_thought=in_thought) == split(text, [], in_thought=in_thought)


def test_the_prompt_says_whether_the_reply_starts_inside_a_thought() -> None:
    assert MARKERS.opens_in_thought("<|im_start|>assistant\n<think>\n")
    assert not MARKERS.opens_in_thought("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not MARKERS.opens_in_thought("<|im_start|>assistant\n")
    assert MARKERS.close_text == "\n</think>\n\n"


def test_markers_come_from_the_vocabulary_or_the_template(tmp_path: Path) -> None:
    thinker = Tokenizer.from_dir(write_reasoning_model(tmp_path / "thinker"))
    assert find_think_markers(thinker) == ThinkMarkers("<think>", "</think>")
    backend = Backend(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    assert find_think_markers(Tokenizer(backend)) is None
    templated = Tokenizer(backend, chat_templates={"default": "[THINK]{{ x }}[/THINK]"})
    assert find_think_markers(templated) == ThinkMarkers("[THINK]", "[/THINK]")


def test_special_marker_tokens_survive_skipping_special_tokens() -> None:
    backend = Backend(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    backend.add_special_tokens(
        [AddedToken(t, special=True) for t in ("<|im_end|>", "<tool_call>", "<think>")]
    )
    backend.decoder = decoders.Fuse()
    tokenizer = Tokenizer(backend)
    ids = tokenizer.encode("<think>a<tool_call>a<|im_end|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>a<tool_call>a"
    assert tokenizer.decode(ids) == "<think>a<tool_call>a<|im_end|>"


CLAUDE_CODE_LIKE: Any = [
    {"role": "system", "content": "You are Claude Code."},
    {"role": "user", "content": "say hi"},
    {"role": "system", "content": "Agents: Explore, Plan."},
    {"role": "user", "content": [{"type": "text", "text": "now"}]},
    {"role": "assistant", "content": "ok", "tool_calls": [{"id": "c", "function": {}}]},
    {"role": "tool", "tool_call_id": "c", "content": "done"},
    {"role": "developer", "content": "Be brief."},
    {"role": "assistant", "content": "hi"},
]


def test_fold_moves_system_turns_to_the_front_in_order() -> None:
    folded = fold_layout(CLAUDE_CODE_LIKE)
    assert folded[0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nAgents: Explore, Plan.\n\nBe brief.",
    }
    assert folded[1] == {"role": "user", "content": "say hi\n\nnow"}  # the run of users merged
    assert [m["role"] for m in folded[2:]] == ["assistant", "tool", "assistant"]


def test_fold_without_a_system_role_opens_the_first_user_turn() -> None:
    folded = fold_layout(CLAUDE_CODE_LIKE, system_role=False)
    assert folded[0]["role"] == "user"
    assert folded[0]["content"] == (
        "You are Claude Code.\n\nAgents: Explore, Plan.\n\nBe brief.\n\nsay hi\n\nnow"
    )
    alone = fold_layout([{"role": "system", "content": "only"}], system_role=False)
    assert alone == [{"role": "user", "content": "only"}]


def test_fold_leaves_a_plain_chat_alone() -> None:
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert fold_layout(chat) == chat


def test_the_streaming_detokenizer_keeps_special_markers(tmp_path: Path) -> None:
    """A tokenizer that marks `<tool_call>` and `<think>` special (as some do) still shows them
    to the reply's parsers token by token; other special tokens stay out of the text."""
    folder = write_reasoning_model(tmp_path / "special")
    backend = Backend.from_file(str(folder / "tokenizer.json"))
    backend.add_special_tokens([AddedToken(t, special=True) for t in ("<tool_call>", "<think>")])
    tokenizer = Tokenizer(backend)
    ids = tokenizer.encode("<think>hm<tool_call>{}<|im_end|>")
    detokenizer = tokenizer.detokenizer(skip_special_tokens=True)
    text = "".join(detokenizer.feed(i) for i in ids) + detokenizer.finish()
    assert text == "<think>hm<tool_call>{}"
