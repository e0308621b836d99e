"""The import rules of docs/architecture.md, checked on the source with `ast` (nothing is imported).

    ray        only in actors/, driver/, deploy/
    vllm       only in rollout/
    deepspeed  only in learner/
    protocols/ imports only pydantic, the standard library and protocols itself
    common/    imports only torch, the standard library and common itself
    direction  protocols, common <- rollout, learner <- actors <- driver (deploy uses protocols only)

Every import counts, wherever it is written: module level, inside functions (deferred imports),
under `if TYPE_CHECKING:` or `try:`, and `importlib.import_module("x")` / `__import__("x")` with a
literal name.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "learner", "rollout", "protocols", "common", "deploy", "driver")

# third-party top-level name -> the packages allowed to import it
RESTRICTED = {
    "ray": {"actors", "driver", "deploy"},
    "vllm": {"rollout"},
    "deepspeed": {"learner"},
}
# project package -> the project packages it may import (itself included)
LAYERS = {
    "protocols": {"protocols"},
    "common": {"common"},
    "rollout": {"protocols", "common", "rollout"},
    "learner": {"protocols", "common", "learner"},
    "deploy": {"protocols", "deploy"},
    "actors": {"protocols", "common", "rollout", "learner", "actors"},
    "driver": set(PACKAGES),
}


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in `source`, the code of module `module`
    (e.g. 'rollout.judges.rule'; a package's __init__ is named after the package with '.__init__')."""
    package = module.rsplit(".", 1)[0].split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the containing package
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            dynamic = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
                isinstance(func, ast.Attribute) and func.attr == "import_module"
            )
            if dynamic and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def source_files() -> list[tuple[str, Path]]:
    """(owning top-level package, path) of every .py file of the library packages."""
    files = [(pkg, path) for pkg in PACKAGES for path in sorted((REPO / pkg).rglob("*.py"))]
    return [(pkg, path) for pkg, path in files if "__pycache__" not in path.parts]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def all_imports() -> list[tuple[str, str, str]]:
    """(owning package, 'file:line', top-level imported name) for the whole library."""
    out = []
    for pkg, path in source_files():
        rel = str(path.relative_to(REPO))
        for line, name in imported_modules(path.read_text(), module_name(path)):
            out.append((pkg, f"{rel}:{line}", name.split(".")[0]))
    return out


IMPORTS = all_imports()


# --------------------------------------------------------------------------- the scanner itself


def test_scanner_finds_every_kind_of_import():
    source = (
        "import os, ray.util as ru\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from vllm import LLM\n"
        "try:\n"
        "    import deepspeed\n"
        "except ImportError:\n"
        "    pass\n"
        "def f():\n"
        "    from torch import nn\n"
        "    class C:\n"
        "        def g(self):\n"
        "            import importlib; importlib.import_module('yaml.constructor')\n"
        "    return __import__('numpy')\n"
        "from . import sibling\n"
        "from .base import Judge\n"
        "from .. import batches\n"
    )
    names = [name for _, name in imported_modules(source, "rollout.judges.rule")]
    assert sorted(names) == sorted([
        "os", "ray.util", "typing", "vllm", "deepspeed", "torch", "importlib", "yaml.constructor", "numpy",
        "rollout.judges", "rollout.judges.base", "rollout",
    ])
    # in a package's __init__, '.' is the package itself
    assert imported_modules("from .batches import FROZEN\n", "protocols.__init__") == [(1, "protocols.batches")]


def test_scan_covers_the_library():
    scanned = {str(path.relative_to(REPO)) for _, path in source_files()}
    for expected in ("actors/judge.py", "rollout/judges/reward_model.py", "protocols/__init__.py", "common/tensors.py",
                     "deploy/placement.py", "driver/run.py", "learner/algorithms/mnpo.py"):
        assert expected in scanned
    # deferred imports inside functions are seen (learner/engine.py imports DeepSpeed in a method)
    assert any(where.startswith("learner/engine.py") and name == "deepspeed" for _, where, name in IMPORTS)
    assert any(pkg == "actors" and name == "ray" for pkg, _, name in IMPORTS)


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("library", sorted(RESTRICTED))
def test_restricted_libraries_stay_in_their_packages(library):
    allowed = RESTRICTED[library]
    offenders = [where for pkg, where, name in IMPORTS if name == library and pkg not in allowed]
    assert offenders == [], f"{library} may only be imported in {sorted(allowed)}"


def test_protocols_import_only_pydantic_and_the_standard_library():
    allowed = {"pydantic", "protocols"} | set(sys.stdlib_module_names)
    offenders = [f"{where} imports {name}" for pkg, where, name in IMPORTS if pkg == "protocols" and name not in allowed]
    assert offenders == []


def test_import_direction_between_project_packages():
    offenders = [
        f"{where}: {pkg} imports {name}"
        for pkg, where, name in IMPORTS
        if name in LAYERS and name not in LAYERS[pkg]
    ]
    assert offenders == [], "protocols, common <- rollout, learner <- actors <- driver; deploy uses protocols only"


def test_common_imports_only_torch_and_the_standard_library():
    allowed = {"torch", "common"} | set(sys.stdlib_module_names)
    offenders = [f"{where} imports {name}" for pkg, where, name in IMPORTS if pkg == "common" and name not in allowed]
    assert offenders == []
