"""A neuron's `/models` dtype and quant reach the fleet's snapshot and `/admin/status`."""

from __future__ import annotations

from cortex.fleet.wire import parse_neuron


def test_dtype_and_quant_of_a_loaded_model_are_kept() -> None:
    listing = {
        "models": [
            {
                "id": "smol",
                "state": "loaded",
                "device": "cpu",
                "memory_mb": 600.5,
                "dtype": "bfloat16",
                "quant": "int4-g64",
                "resident_mb": 600.5,
            },
            {"id": "other", "state": "available", "device": "cpu", "dtype": None, "quant": 3},
        ]
    }
    node = parse_neuron("a", "http://127.0.0.1:1", {}, listing)
    loaded, other = node.models["smol"], node.models["other"]
    assert (loaded.dtype, loaded.quant) == ("bfloat16", "int4-g64")
    assert loaded.to_dict()["dtype"] == "bfloat16" and loaded.to_dict()["quant"] == "int4-g64"
    assert (other.dtype, other.quant) == (None, None)  # unknown or malformed: not shown
