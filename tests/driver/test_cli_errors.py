"""Bad input ends the driver with one clear line on stderr, before Ray or any actor starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_driver(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "driver", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("driver: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "ray" not in result.stderr.lower().replace("ray.", "")  # nothing of Ray was started or logged


def test_unknown_algo():
    assert_one_line_error(
        run_driver("--algo", "ppo2"), "unknown algorithm 'ppo2'", "valid: dpo, grpo, inpo, ipo, mnpo, osp, ppo, rdpo, rloo, sppo"
    )


def test_missing_model_path(tmp_path):
    missing = tmp_path / "no-such-model"
    assert_one_line_error(run_driver("--model", str(missing)), "model path", str(missing), "does not exist")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("judges:\n  - name: gt\n    kind: rule\n", ["judges[0] (name 'gt')", "field 'function'", "Field required"]),
        ("judges:\n  - name: gt\n    kind: oracle\n", ["judges[0] (name 'gt')", "field 'kind'", "'rule'"]),
        ("judges: [\n", ["is not valid YAML"]),
        (
            "judges:\n  - {name: gt, kind: rule, function: 'rollout.tasks.wordlist:nope'}\n",
            ["judge 'gt'", "field 'function'", "has no attribute 'nope'"],
        ),
        (
            "judges:\n  - {name: rm, kind: reward_model, path: /no/such/rm}\n",
            ["judge 'rm'", "field 'path'", "'/no/such/rm' does not exist"],
        ),
        (
            "judges:\n  - {name: a, kind: rule, function: 'm:f'}\n  - {name: a, kind: rule, function: 'm:f'}\n",
            ["duplicate judge names ['a']"],
        ),
    ],
)
def test_malformed_manifest(tmp_path, text, fragments):
    manifest = tmp_path / "judges.yaml"
    manifest.write_text(text)
    assert_one_line_error(run_driver("--judges", str(manifest)), str(manifest), *fragments)


def test_missing_manifest(tmp_path):
    assert_one_line_error(run_driver("--judges", str(tmp_path / "x.yaml")), "judge manifest", "does not exist")


def test_bad_override_names_the_field():
    assert_one_line_error(run_driver("--set", "learner.lr=-1"), "field 'learner.lr'", "greater than 0")


def test_list_algos_prints_every_algorithm():
    result = run_driver("--list-algos")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mnpo ") and "MNPO" in result.stdout
    from learner.algorithms import ALGORITHMS

    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(ALGORITHMS)
    assert {"ppo", "osp", "mnpo", "dpo", "ipo", "sppo", "inpo", "rdpo", "grpo", "rloo"} <= set(ALGORITHMS)
    assert all(len(line.split(None, 1)[1]) > 20 for line in lines)  # each has a description


@pytest.mark.parametrize(
    ("storage", "fragments"),
    [
        ("nosuchscheme://bucket/run", ["storage 'nosuchscheme://bucket/run'", "nosuchscheme"]),
        ("file:///proc/no-such-storage", ["storage 'file:///proc/no-such-storage' cannot be written", "credentials"]),
    ],
)
def test_a_storage_that_cannot_be_written_fails_before_anything_starts(tmp_path, storage, fragments):
    out = tmp_path / "run"
    assert_one_line_error(run_driver("--output", str(out), "--set", f"storage={storage}"), *fragments)
    assert not out.exists()  # nothing written
