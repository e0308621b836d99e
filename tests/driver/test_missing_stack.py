"""`python -m driver` under a Python without the project's packages exits with one line that names
them and says how to run with the project's environment (as a job whose `python` is not the
virtualenv's does), instead of a traceback from the first import.

`-S` runs this interpreter without any site-packages: a Python that has none of the stack. Stub
packages on PYTHONPATH then stand in for the ones a half-equipped Python has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_bare_driver(tmp_path: Path, present: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    stubs = tmp_path / "stubs"
    for name in present:
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text("raise ImportError('a stub: the driver must not import it')\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()), "PYTHONPATH": str(stubs)}
    return subprocess.run(
        [sys.executable, "-S", "-m", "driver", "--algo", "mnpo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def assert_one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("driver: error: this Python (") and sys.executable in line
    assert "source .venv/bin/activate" in line and "before `ray start`" in line
    assert "-m driver" in line and '"py_executable": "' in line  # the entrypoint and runtime_env alternatives
    return line


def test_no_stack_at_all_names_every_missing_package(tmp_path):
    line = assert_one_line(run_bare_driver(tmp_path))
    assert "missing packages pydantic, PyYAML, ray, torch, transformers, numpy, matplotlib." in line


def test_only_torch_missing_names_torch_alone(tmp_path):
    """The reported case: the job's Python had the light packages and failed at `import torch`."""
    line = assert_one_line(run_bare_driver(tmp_path, present=("pydantic", "yaml", "ray", "transformers", "numpy", "matplotlib")))
    assert "missing package torch." in line
