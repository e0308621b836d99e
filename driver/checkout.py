"""The project runs from its checkout (README, "Installation"); how Ray's workers find its packages.

`pip install` of the project installs its dependencies only, none of its top-level packages
(`driver`, `actors`, `learner`, ...: generic names that would collide with others in site-packages).
The driver imports them from the checkout (`python -m driver` run at its root); Ray's worker
processes need the checkout on their path too. Ray 2.60 already adds a driver's working directory to
its workers' `sys.path` (unless the job has a `working_dir`); the runtime_env from `worker_runtime_env`
makes that independent of where the driver was started from:

- a local cluster the driver (or a test) starts: its raylet inherits the driver's environment, so the
  workers get PYTHONPATH = the checkout, then the driver's own PYTHONPATH.
- a running cluster joined with `--address`/RAY_ADDRESS: the checkout goes before the PYTHONPATH each
  node's workers would have had (`${PYTHONPATH}`, which Ray expands when it starts a worker; if that
  is unset an empty entry is left at the end, the worker's directory). As with Ray's own handling of
  the driver's directory, this assumes the nodes see the checkout at the same path (one machine, or a
  shared filesystem); elsewhere, `ray job submit --working-dir .` ships the code.
- inside a Ray job whose runtime_env already ships code (`ray job submit --working-dir .`, or
  `py_modules`) or sets PYTHONPATH: nothing (Ray puts the uploaded checkout on the workers' path, and
  a second PYTHONPATH would conflict with the job's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job manager in a submitted job's entrypoint


def job_ships_code(environ: Mapping[str, str]) -> bool:
    """True in a Ray job whose runtime_env has a working_dir, py_modules or a PYTHONPATH."""
    raw = environ.get(JOB_CONFIG_ENV)
    if not raw:
        return False
    runtime_env = json.loads(raw).get("runtime_env") or {}
    return bool(
        runtime_env.get("working_dir") or runtime_env.get("py_modules") or "PYTHONPATH" in (runtime_env.get("env_vars") or {})
    )


def worker_runtime_env(joined: bool, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """runtime_env for `ray.init` that puts the checkout first on the workers' path.

    `joined`: the cluster was already running (`--address`/RAY_ADDRESS) rather than started by this
    process with `address="local"`. See the module docstring for each case.
    """
    environ = os.environ if environ is None else environ
    if joined and job_ships_code(environ):
        return {}
    inherited = "${PYTHONPATH}" if joined else environ.get("PYTHONPATH", "")
    checkout = str(CHECKOUT)
    parts = [checkout, *(p for p in inherited.split(os.pathsep) if p and p != checkout)]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(parts)}}
