"""deploy/runtime_env.yaml (`ray job submit --runtime-env deploy/runtime_env.yaml`): Ray accepts it,
it ships the checkout without run directories, the venv or caches, and it holds no secret.
tests/e2e/test_two_nodes.py submits a real job with it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from pathspec import PathSpec
from ray.runtime_env import RuntimeEnv

REPO = Path(__file__).resolve().parents[2]
ENV = yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())


def test_ray_accepts_it_and_knows_every_field():
    assert set(ENV) <= RuntimeEnv.known_fields  # RuntimeEnv takes unknown (plugin) fields silently
    runtime_env = RuntimeEnv(**ENV)  # type checks: working_dir str, excludes list[str], env_vars dict[str, str]
    assert runtime_env.working_dir() == "."
    assert runtime_env.env_vars() == ENV["env_vars"]


def excluded(path: str) -> bool:
    """As Ray matches `excludes`: gitignore patterns against the path relative to working_dir
    (ray/_private/runtime_env/packaging.py _get_excludes)."""
    return PathSpec.from_lines("gitwildmatch", ENV["excludes"]).match_file(path)


def test_the_excludes_cover_runs_the_venv_and_caches_but_not_the_code():
    for path in [
        "runs/mnpo-20260101/metrics.jsonl",
        "runs/nash/nash.json",
        ".venv/bin/python",
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        ".cache/online-rlhf/x/policy/model.safetensors",
        ".git/objects/ab/cdef",
        "driver/__pycache__/run.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/content",
        "online_rlhf.egg-info/PKG-INFO",
    ]:
        assert excluded(path), path
    for path in [
        "driver/run.py",
        "deploy/configs/default.yaml",
        "deploy/judges/default.yaml",
        "pyproject.toml",
        "rollout/tasks/wordlist.py",
        "tests/e2e/ray_head.py",
        "docs/deploy.md",
    ]:
        assert not excluded(path), path
    # every file git tracks is shipped
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert "driver/__main__.py" in tracked
    assert [path for path in tracked if excluded(path)] == []


def test_it_names_the_judge_api_key_s_variable_never_a_value():
    env = ENV["env_vars"]
    assert env["JUDGE_API_KEY"] == "${JUDGE_API_KEY}"  # filled from each node's environment when a worker starts
    for name, value in env.items():
        if re.search(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD)(_|$)", name):
            assert value == f"${{{name}}}", f"{name}: a secret's value in the file"
    text = (REPO / "deploy" / "runtime_env.yaml").read_text()
    assert not re.search(r"sk-[A-Za-z0-9]{8,}|Bearer \w", text)
