"""learner/distributed.py environment_first: DeepSpeed's JIT build always runs this venv's ninja (a
system ninja of another version rebuilds the op the venv's ninja built, and the other way round)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from learner.distributed import environment_first


def venv(tmp_path: Path, ninja: bool = True) -> str:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    if ninja:
        (bin_dir / "ninja").write_text("")
    return str(bin_dir / "python")


def test_the_venv_bin_goes_first_once(tmp_path):
    python = venv(tmp_path)
    bin_dir = os.path.dirname(python)
    assert environment_first("/usr/bin:/bin", python) == f"{bin_dir}:/usr/bin:/bin"
    assert environment_first(f"{bin_dir}:/usr/bin", python) == f"{bin_dir}:/usr/bin"  # already first: unchanged
    assert environment_first(f"/usr/bin:{bin_dir}:/bin", python) == f"{bin_dir}:/usr/bin:/bin"  # moved, not doubled
    assert environment_first("", python) == bin_dir


def test_a_venv_without_ninja_leaves_path_alone(tmp_path):
    assert environment_first("/usr/bin:/bin", venv(tmp_path, ninja=False)) == "/usr/bin:/bin"


def test_this_venv_s_ninja_is_the_one_found():
    ninja = Path(sys.executable).parent / "ninja"
    if not ninja.is_file():
        pytest.skip("this environment has no ninja of its own")
    without = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != str(ninja.parent))
    assert shutil.which("ninja", path=environment_first(without)) == str(ninja)
