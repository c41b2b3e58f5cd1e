"""`python -m cortex.neuron`: the same as `cortex-neuron`."""

from __future__ import annotations

import sys

from cortex.neuron.server import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
