"""`python -m cortex`: the same as the `cortex` command."""

from __future__ import annotations

import sys

from cortex.cli import main

sys.exit(main())
