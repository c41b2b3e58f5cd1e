"""Installs: nothing of ours shadows a real module, pyproject.toml and locks/ agree and pin what is
installed, the declared dependencies are exactly the imported ones, and the gateway needs no torch.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = canonicalize_name(PROJECT["name"])
SETS = ("base", "redis", "run", "dev")
RUNTIME = [g for g in ("base", *PROJECT["optional-dependencies"]) if g != "dev"]

# Declared but never imported, each for a reason.
NOT_IMPORTED = {
    "httptools": "uvicorn's C HTTP parser, chosen by uvicorn itself",
    "accelerate": "transformers refuses to load a GGUF (our parity references) without it",
    "pytest-timeout": "a pytest plugin (the `timeout` ini option)",
    "ruff": "the linter and formatter, run by make",
    "mypy": "the type checker, run by make",
    "mkdocs-material": "the docs site's theme, run by make docs",
}
# Imported but not declared, each for a reason: optional peers that benchmarks skip when absent.
UNDECLARED = {
    "llama_cpp": "llama-cpp-python, the CPU peer of benchmarks (compiles for minutes)",
    "kernels": "a transformers dependency that tests/kernels once hid (imported to prove it isn't)",
}
TORCH_FREE = ("cortex", "cortex.gateway", "cortex.fleet", "cortex.translate", "cortex.protocol",
              "cortex.config", "cortex.cli", "cortex.errors")  # fmt: skip
ENGINE_ONLY = ("torch", "numpy", "gguf", "triton", "tokenizers", "jinja2", "safetensors")


def requirements(group: str) -> list[Requirement]:
    """The requirements of `base`, `engine` or `dev` that apply on this platform."""
    specs = PROJECT["dependencies"] if group == "base" else PROJECT["optional-dependencies"][group]
    found = [Requirement(spec) for spec in specs]
    return [
        r
        for r in found
        if canonicalize_name(r.name) != OWN and (r.marker is None or r.marker.evaluate())
    ]


def lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "locks" / f"{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            pkg, _, version = line.partition("==")
            pins[canonicalize_name(pkg)] = version
    return pins


def test_no_test_folder_or_benchmark_shadows_an_installed_module() -> None:
    """pytest puts the repository root on sys.path (tests/ is a package); python puts a script's
    folder there: neither may hide a module that an installed distribution provides."""
    mine = (ROOT / "tests", ROOT / "benchmarks", ROOT / "src" / "cortex" / "tests")
    provided = importlib.metadata.packages_distributions()
    for name in provided:
        if not name.isidentifier():
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
        for place in places:
            assert place is not None
            assert not any(Path(place).is_relative_to(folder) for folder in mine), (name, place)
    for script in (ROOT / "benchmarks").glob("*.py"):
        assert script.stem.startswith("bench_"), f"{script.name}: benchmark scripts are bench_*.py"
        assert script.stem not in provided, f"{script.name} shadows an installed module"
    for folder in (ROOT / "tests").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), f"{folder}: test folders are packages"


def test_the_module_that_tests_kernels_once_hid_imports_for_real() -> None:
    if "kernels" not in importlib.metadata.packages_distributions():
        pytest.skip("the kernels distribution is not installed in this lock")
    import kernels  # the Hugging Face package that transformers' hub_kernels imports

    assert not Path(kernels.__file__ or "").is_relative_to(ROOT / "tests")
    importlib.import_module("transformers.integrations.hub_kernels")


def test_locks_match_pyproject() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/lock.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_each_lock_pins_its_sets_requirements_within_their_ranges() -> None:
    sets = {
        "base": ["base"],
        "redis": ["base", "redis"],
        "run": ["base", "engine"],
        "dev": ["base", "engine", "redis", "dev"],
    }
    for name, groups in sets.items():
        pins = lock(name)
        assert OWN not in pins
        for group in groups:
            for req in requirements(group):
                pinned = pins.get(canonicalize_name(req.name))
                assert pinned is not None, f"locks/{name}.txt does not pin {req.name}"
                assert req.specifier.contains(pinned, prereleases=True), (name, str(req), pinned)
    assert "torch" not in lock("base"), "a gateway host installs without torch"
    assert set(lock("base")) <= set(lock("run")) <= set(lock("dev"))
    assert set(lock("base")) <= set(lock("redis")) <= set(lock("dev"))


def test_this_environment_is_what_the_dev_lock_pins() -> None:
    """`make test` on a fresh machine runs on exactly the versions CI ran on."""
    wrong = {}
    for pkg, pinned in lock("dev").items():
        try:
            have = importlib.metadata.version(pkg).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            have = "missing"
        if have != pinned:
            wrong[pkg] = f"{have} (lock: {pinned})"
    assert not wrong, f"run scripts/setup.sh dev to install the lock: {wrong}"


def _imports(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    local = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    return names - set(sys.stdlib_module_names) - {"cortex", "tests", "__future__"} - local


def _declared(*groups: str) -> dict[str, set[str]]:
    """Declared distribution -> the import names it provides (from the installed metadata)."""
    by_dist: dict[str, set[str]] = {}
    for name, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(canonicalize_name(dist), set()).add(name)
    return {
        canonicalize_name(r.name): by_dist.get(canonicalize_name(r.name), set())
        for group in groups
        for r in requirements(group)
    }


def test_every_import_is_declared_and_every_declaration_imported() -> None:
    runtime = _declared(*RUNTIME)
    everything = _declared(*RUNTIME, "dev")
    src = _imports(ROOT / "src")
    rest = set().union(
        *(_imports(ROOT / d) for d in ("tests", "benchmarks", "examples", "scripts"))
    )
    provided = set().union(*runtime.values())
    assert src <= provided, f"src/ imports undeclared modules: {sorted(src - provided)}"
    provided_all = set().union(*everything.values()) | set(UNDECLARED)
    assert rest <= provided_all, f"undeclared imports: {sorted(rest - provided_all)}"
    unused = {
        dist
        for dist, names in everything.items()
        if dist not in NOT_IMPORTED and not names & (src | rest)
    }
    assert not unused, f"declared but never imported (drop them or say why): {sorted(unused)}"


def test_the_control_plane_imports_no_engine_module() -> None:
    code = (
        f"import sys; import {', '.join(TORCH_FREE)}; "
        f"print(sorted(m for m in {ENGINE_ONLY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


NVIDIA_SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}                 Driver Version: {driver}         CUDA Version: {cuda}     |
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |                    0 |
"""


@pytest.mark.parametrize(
    ("smi", "kind", "index", "said"),
    [
        (None, "cpu", "/whl/cpu", "no NVIDIA GPU seen"),
        (NVIDIA_SMI.format(driver="580.65.06", cuda="13.0"), "cuda", "", "CUDA 13.0 build"),
        (NVIDIA_SMI.format(driver="570.86.10", cuda="12.8"), "cuda", "/whl/cu128", "(cu128)"),
        (NVIDIA_SMI.format(driver="560.35.03", cuda="12.6"), "cuda", "/whl/cu126", "(cu126)"),
    ],
)
def test_setup_takes_the_torch_build_this_host_runs(
    smi: str | None, kind: str, index: str, said: str, tmp_path: Path
) -> None:
    args = [sys.executable, "scripts/torch_source.py"]
    if smi is not None:
        (tmp_path / "smi.txt").write_text(smi)
        args += ["--smi", str(tmp_path / "smi.txt")]
    line = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    got_kind, got_index, why = line.rstrip("\n").split("\t")
    assert got_kind == kind and got_index.endswith(index) and said in why
    if smi is None:
        return
    old = tmp_path / "old.txt"
    old.write_text(NVIDIA_SMI.format(driver="470.57.02", cuda="11.4"))
    done = subprocess.run([*args[:2], "--smi", str(old)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "CUDA 11.4" in done.stderr and "12.6" in done.stderr


@pytest.mark.slow
def test_a_gateway_host_installs_and_serves_without_torch(tmp_path: Path) -> None:
    """The base install, from locks/base.txt, in a fresh venv: the CLIs answer, the neuron and the
    embedded serve name the engine extra, the gateway serves a chat from a fake neuron, and the
    gateway's fake-neuron test modules pass in that venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, bindir = str(venv / "bin" / "python"), venv / "bin"
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", str(ROOT / "locks" / "base.txt"), str(ROOT)], check=True)
    probe = f"import sys, {', '.join(TORCH_FREE)}; "
    probe += f"print([m for m in {ENGINE_ONLY!r} if m in sys.modules])"
    assert (
        subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    )
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    for command in (["cortex-gateway", "--help"], ["cortex", "serve", "--help"]):
        done = subprocess.run(
            [str(bindir / command[0]), *command[1:]], capture_output=True, text=True
        )
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
    for command in (["cortex-neuron"], ["cortex", "serve"]):
        done = subprocess.run(
            [str(bindir / command[0]), *command[1:]], capture_output=True, text=True
        )
        assert done.returncode == 2
        assert re.fullmatch(r"cortex: .*pip install 'cortex-fleet\[engine\]'\n", done.stderr), (
            done.stderr
        )

    from cortex.testing import start_gateway_process
    from tests.faults.servers import fake_neuron, gateway_config, start_neurons

    neurons = start_neurons({"a": fake_neuron("a", ["tiny"])})
    try:
        import httpx

        config = gateway_config(neurons, auth=False)
        gateway = start_gateway_process(config, python=python)
        try:
            reply = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"]
        finally:
            gateway.stop()
    finally:
        for neuron in neurons.values():
            neuron.stop()

    # The gateway's own fake-neuron tests, run by this venv: only the test tools are added.
    tools = ["pytest", "pytest-asyncio", "pytest-timeout", "openai", "anthropic"]
    subprocess.run([*pip, "-c", str(ROOT / "locks" / "dev.txt"), *tools], check=True)
    suite = ["tests/gateway/test_app.py", "tests/gateway/test_sdk.py"]
    done = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suite],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


def test_a_stale_lock_fails_with_the_command_that_refreshes_it(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "scripts/lock.py", *(f"locks/{s}.txt" for s in SETS)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"rich>=13.7"', '"rich>=13.8"'))
    done = subprocess.run(
        [sys.executable, "scripts/lock.py", "--check"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert ", ".join(f"locks/{name}.txt" for name in SETS) in done.stderr
    assert "Run `python3 scripts/lock.py`" in done.stderr


def test_setup_names_a_missing_interpreter_before_doing_anything(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "scripts/setup.sh", "dev"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(tmp_path / "python3.9")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "cortex needs Python 3.11 or newer (pass another with PYTHON=" in done.stderr


def test_setup_refuses_an_old_python_naming_its_version(tmp_path: Path) -> None:
    old = tmp_path / "python3.9"  # answers setup's two questions as a Python 3.9 would
    old.write_text('#!/bin/sh\ncase "$2" in *print*) echo 3.9 ;; *) exit 1 ;; esac\n')
    old.chmod(0o755)
    done = subprocess.run(
        ["bash", "scripts/setup.sh", "dev"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(old)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert f"'{old}' is Python 3.9; cortex needs 3.11 or newer" in done.stderr
