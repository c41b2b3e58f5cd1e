"""The public API: `__all__` sorted and complete, every name importable, `import cortex` light."""

from __future__ import annotations

import subprocess
import sys

import cortex


def test_all_is_sorted_and_resolves() -> None:
    names = [n for n in cortex.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in cortex.__all__:
        assert getattr(cortex, name) is not None, name


def test_lazy_table_matches_all() -> None:
    lazy = set(cortex._LAZY)
    assert lazy == set(cortex.__all__) - {"__version__"}


def test_light_imports_do_not_load_torch() -> None:
    code = (
        "import sys, cortex, cortex.errors, cortex.config, cortex.protocol, cortex.translate; "
        "cortex.Fleet; cortex.anthropic_request_to_openai; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
