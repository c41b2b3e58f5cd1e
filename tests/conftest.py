"""Session-wide test set-up: the Triton interpreter and the default model, made once."""

from __future__ import annotations

import os

# The interpreter must be chosen before triton is first imported anywhere.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
