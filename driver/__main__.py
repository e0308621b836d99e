"""`python -m driver --algo mnpo`: see driver/cli.py.

Before anything heavy is imported, the Python running the driver must have the packages the
driver process imports. Under `ray job submit`, the entrypoint's `python` is the first one on the
PATH that `ray start` ran with (not the submitting shell's), so a cluster started without the
project's virtualenv activated runs the job with another Python; the driver then says so in one
line instead of failing at the first import.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

# Import names the driver process needs (its actors also need vllm and deepspeed, in their own Python).
DRIVER_PACKAGES = {
    "pydantic": "pydantic",
    "yaml": "PyYAML",
    "ray": "ray",
    "torch": "torch",
    "transformers": "transformers",
    "numpy": "numpy",
    "matplotlib": "matplotlib",
}


def missing_packages() -> list[str]:
    """Distribution names of the driver's packages this Python cannot import."""
    return [dist for module, dist in DRIVER_PACKAGES.items() if find_spec(module) is None]


def missing_stack_message(missing: list[str]) -> str:
    venv_python = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else "/path/to/online-rlhf/.venv/bin/python"
    return (
        f"driver: error: this Python ({sys.executable}) lacks the project's environment: missing "
        f"package{'s' if len(missing) > 1 else ''} {', '.join(missing)}. Run the driver with the project's "
        f"virtualenv: `source .venv/bin/activate` (for `ray job submit`: before `ray start`, since the job's "
        f"`python` is the one on the PATH the cluster started with), or name it in the entrypoint, "
        f"`ray job submit ... -- {python} -m driver`, with --runtime-env-json "
        f'\'{{"py_executable": "{python}"}}\' so the run\'s actors use it too'
    )


if __name__ == "__main__":
    if missing := missing_packages():
        sys.stderr.write(missing_stack_message(missing) + "\n")
        raise SystemExit(2)

    from driver.cli import main

    main()
