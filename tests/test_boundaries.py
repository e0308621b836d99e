"""The import rules of docs/architecture.md, checked on the source with `ast` (nothing is imported).

    ray        only in actors/, driver/, deploy/
    vllm       only in rollout/
    deepspeed  only in learner/
    protocols/ imports only pydantic, the standard library and protocols itself
    common/    imports only torch, the standard library and common itself
    direction  protocols, common <- rollout, learner <- actors <- driver (deploy uses protocols only)
    cycles     none between packages (LAYERS is a DAG) and none between modules

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


def imports_with_names(source: str, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, absolute dotted name, names taken from it by `from ... import`) of every import in
    `source`, the code of module `module` (e.g. 'rollout.judges.rule'; a package's __init__ is
    named after the package with '.__init__')."""
    package = module.rsplit(".", 1)[0].split(".")
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the containing package
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            dynamic = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
                isinstance(func, ast.Attribute) and func.attr == "import_module"
            )
            if dynamic and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value, []))
    return found


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in `source` (see `imports_with_names`)."""
    return [(line, name) for line, name, _ in imports_with_names(source, module)]


def module_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the modules of `sources` (module name -> code) it imports by name.

    `from pkg import sub` is an import of the module pkg.sub where that is one, else of pkg; the
    package __init__s Python runs on the way to a module are not counted.
    """

    def known(name: str) -> str | None:
        return name if name in sources else f"{name}.__init__" if f"{name}.__init__" in sources else None

    graph: dict[str, set[str]] = {}
    for module, source in sources.items():
        targets: set[str | None] = set()
        for _, name, names in imports_with_names(source, module):
            subs = [known(f"{name}.{sub}") for sub in names]
            targets.update(subs)
            if not (names and all(subs)):  # something other than submodules is taken from `name`
                targets.add(known(name))
        graph[module] = {t for t in targets if t and t != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each import cycle of `graph` (its strongly connected components), sorted."""

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    reach = {module: reachable(module) for module in graph}
    cycles = {tuple(sorted(m for m in reach[module] if module in reach[m])) for module in graph if module in reach[module]}
    return [list(cycle) for cycle in sorted(cycles)]


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
    assert sorted(names) == sorted(
        [
            "os",
            "ray.util",
            "typing",
            "vllm",
            "deepspeed",
            "torch",
            "importlib",
            "yaml.constructor",
            "numpy",
            "rollout.judges",
            "rollout.judges.base",
            "rollout",
        ]
    )
    # in a package's __init__, '.' is the package itself
    assert imported_modules("from .batches import FROZEN\n", "protocols.__init__") == [(1, "protocols.batches")]


def test_cycle_finder_sees_deferred_and_type_checking_imports():
    sources = {
        "learner.engine": "def train():\n    from learner.sequence_step import train_sequences\n",
        "learner.sequence_step": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from learner.engine import PolicyLearner\n",
        "learner.__init__": "",
        "learner.ops": "from learner import collate\n",  # a submodule taken from a package: not the __init__
        "learner.collate": "from . import ops\n",
        "a": "import b\n",
        "b": "import importlib\nimportlib.import_module('c')\n",
        "c": "from a import x\n",
    }
    graph = module_graph(sources)
    assert graph["learner.ops"] == {"learner.collate"}
    assert import_cycles(graph) == [
        ["a", "b", "c"],
        ["learner.collate", "learner.ops"],
        ["learner.engine", "learner.sequence_step"],
    ]


def test_scan_covers_the_library():
    scanned = {str(path.relative_to(REPO)) for _, path in source_files()}
    for expected in (
        "actors/judge.py",
        "rollout/judges/reward_model.py",
        "protocols/__init__.py",
        "common/tensors.py",
        "deploy/placement.py",
        "driver/run.py",
        "learner/algorithms/mnpo.py",
    ):
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


def test_protocols_import_only_pydantic_numpy_and_the_standard_library():
    allowed = {"pydantic", "numpy", "protocols"} | set(sys.stdlib_module_names)
    offenders = [f"{where} imports {name}" for pkg, where, name in IMPORTS if pkg == "protocols" and name not in allowed]
    assert offenders == []


def test_import_direction_between_project_packages():
    offenders = [f"{where}: {pkg} imports {name}" for pkg, where, name in IMPORTS if name in LAYERS and name not in LAYERS[pkg]]
    assert offenders == [], "protocols, common <- rollout, learner <- actors <- driver; deploy uses protocols only"


def test_common_imports_only_torch_and_the_standard_library():
    allowed = {"torch", "common"} | set(sys.stdlib_module_names)
    offenders = [f"{where} imports {name}" for pkg, where, name in IMPORTS if pkg == "common" and name not in allowed]
    assert offenders == []


def test_layers_have_no_cycle():
    graph = {pkg: allowed - {pkg} for pkg, allowed in LAYERS.items()}
    assert set(graph) == set(PACKAGES)
    assert import_cycles(graph) == []


def test_no_import_cycles_between_modules():
    sources = {module_name(path): path.read_text() for _, path in source_files()}
    assert import_cycles(module_graph(sources)) == []
