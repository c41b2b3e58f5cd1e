"""A neuron's pulls in `/status` and a load's phases in `/models` reach the fleet's snapshot and
`/admin/status`; malformed entries are left out, never an error."""

from __future__ import annotations

from cortex.fleet.wire import parse_neuron


def test_pulls_and_a_loads_phase_are_kept() -> None:
    pull = {
        "source": "hf:org/tiny",
        "phase": "pulling",
        "fraction": 0.25,
        "bytes": 1000,
        "total_bytes": 4000,
        "file": "model.safetensors",
    }
    status = {"pulls": [pull, {"phase": "pulling"}, "junk", 3]}  # no source, not objects
    listing = {
        "models": [
            {"id": "m", "state": "loading", "progress": {"phase": "warming", "fraction": 0.5}}
        ]
    }
    node = parse_neuron("a", "http://127.0.0.1:1", status, listing)
    assert node.pulls == (pull,)
    assert node.to_dict()["pulls"] == [pull]
    assert node.models["m"].to_dict()["progress"] == {"phase": "warming", "fraction": 0.5}


def test_an_older_neuron_without_pulls() -> None:
    assert parse_neuron("a", "http://127.0.0.1:1", {}, []).pulls == ()
    assert parse_neuron("a", "http://127.0.0.1:1", {"pulls": {"x": 1}}, []).pulls == ()
