"""Judge manifests are rejected before anything starts, with one line that names the file, the
judge and the field: schema errors (deploy/loading.py) and the checks of driver/plan.py
`check_manifest` (imports, model paths, API-key variables, population members). Every shipped
manifest passes both."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.loading import ConfigError, load_manifest
from driver.plan import check_manifest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (
    "default",
    "groups",
    "http",
    "mixture",
    "pairwise",
    "population",
    "population-draw",
    "reward_model",
    "self",
    "self-sharp",
    "two_nodes",
)
GT = "rollout.tasks.wordlist:ground_truth"


def rejected(tmp_path, text: str) -> tuple[str, str]:
    """(error message, file name) of a manifest that must not pass load + check."""
    path = tmp_path / "judges.yaml"
    path.write_text(text)
    with pytest.raises((ConfigError, ValueError, FileNotFoundError)) as excinfo:
        check_manifest(load_manifest(path), str(path))
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message, str(path)


def population(*members: str, extra: str = "") -> str:
    lines = "".join(f"      - {m}\n" for m in members)
    return f"judges:\n  - name: crowd\n    kind: population\n{extra}    members:\n{lines}"


RULE = f"{{name: gt, kind: rule, function: '{GT}'}}"


# --------------------------------------------------------------------------- schema errors (load_manifest)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "judges:\n  - {name: gt, kind: oracle}\n",
            ["judges[0] (name 'gt')", "field 'kind'", "'oracle'", "'population'", "'self'"],
        ),
        (population(RULE, "{name: x, kind: oracle}"), ["judges[0] (name 'crowd')", "field 'members[1].kind'", "'oracle'"]),
        (
            f"judges:\n  - {{name: gt, kind: rule, function: '{GT}', weight: 0}}\n",
            ["judges[0] (name 'gt')", "field 'weight'", "greater than 0"],
        ),
        (
            f"judges:\n  - {{name: gt, kind: rule, function: '{GT}', weight: -1.5}}\n",
            ["judges[0] (name 'gt')", "field 'weight'", "(got -1.5)"],
        ),
        (
            population(RULE, f"{{name: b, kind: rule, function: '{GT}', weight: 0}}"),
            ["judges[0] (name 'crowd')", "field 'members[1].weight'", "greater than 0"],
        ),
        (
            f"judges:\n  - {RULE}\n  - {{name: gt, kind: reward_model, path: builtin:reward-model}}\n",
            ["field 'judges'", "duplicate judge names ['gt']"],
        ),
        (
            population(RULE, f"{{name: gt, kind: rule, function: '{GT}'}}"),
            ["judges[0] (name 'crowd')", "field 'members'", "repeated: ['gt']"],
        ),
        ("judges:\n  - {name: pj, kind: pairwise}\n", ["judges[0] (name 'pj')", "field 'path'", "Field required"]),
        (f"judges:\n  - {RULE}\neval: {{name: me, kind: self}}\n", ["field 'eval'", "'me'", "pointwise"]),
    ],
    ids=[
        "unknown-kind",
        "unknown-member-kind",
        "zero-weight",
        "negative-weight",
        "member-weight",
        "duplicate-names",
        "duplicate-member-names",
        "missing-path",
        "eval-not-pointwise",
    ],
)
def test_schema_errors_name_file_judge_and_field(tmp_path, text, fragments):
    message, _ = rejected(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------- check_manifest


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "judges:\n  - {name: rm, kind: reward_model, path: /no/such/rm}\n",
            ["judge 'rm'", "field 'path'", "'/no/such/rm' does not exist"],
        ),
        (
            "judges:\n  - {name: pj, kind: pairwise, path: /no/such/judge}\n",
            ["judge 'pj'", "field 'path'", "judge model path '/no/such/judge' does not exist"],
        ),
        (
            "judges:\n  - {name: pj, kind: pairwise, path: 'builtin:judge'}\n",
            ["judge 'pj'", "field 'path'", "unknown built-in model 'builtin:judge'", "builtin:policy"],
        ),
        (
            population(RULE, "{name: pj, kind: pairwise, path: /no/such/judge}"),
            ["judge 'crowd': member 'pj': field 'path'", "'/no/such/judge' does not exist"],
        ),
        (
            "judges:\n  - {name: gt, kind: rule, function: 'rollout.tasks.wordlist:nope'}\n",
            ["judge 'gt'", "field 'function'", "has no attribute 'nope'"],
        ),
        (
            "judges:\n  - {name: gt, kind: rule, function: 'no_such_package.mod:f'}\n",
            ["judge 'gt'", "field 'function'", "cannot import module 'no_such_package.mod'"],
        ),
        (
            population("{name: topical, kind: rule, function: 'rollout.tasks.wordlist:nope'}"),
            ["judge 'crowd': member 'topical': field 'function'", "has no attribute 'nope'"],
        ),
        (
            f"judges:\n  - {{name: rm, kind: rule, function: '{GT}'}}\neval: {{name: e, kind: reward_model, path: /no/rm}}\n",
            ["judge 'e'", "field 'path'", "'/no/rm' does not exist"],
        ),
        (
            population(RULE, "{name: me, kind: self}"),
            ["judges[0] (name 'crowd')", "field 'members'", "members[1] ('me')", "member 'me' is of kind 'self'", "top-level"],
        ),
    ],
    ids=[
        "rm-path",
        "pairwise-path",
        "unknown-builtin",
        "member-path",
        "no-attribute",
        "no-module",
        "member-function",
        "eval-path",
        "self-member",
    ],
)
def test_check_manifest_errors_name_file_judge_and_field(tmp_path, text, fragments):
    message, _ = rejected(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, message


SECRET = "sk-do-not-print-0123456789"


def http(name: str = "llm", api_key_env: str | None = "JUDGE_TEST_KEY") -> str:
    key = f", api_key_env: {api_key_env}" if api_key_env else ""
    return f"{{name: {name}, kind: http, base_url: 'http://127.0.0.1:8000/v1', model: m{key}}}"


def test_missing_api_key_variable_is_named_but_no_value_is_printed(tmp_path, monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    monkeypatch.setenv("JUDGE_TEST_KEY_OTHER", SECRET)  # a key is around, but not the one named
    message, _ = rejected(tmp_path, f"judges:\n  - {http()}\n")
    assert "judge 'llm'" in message and "field 'api_key_env'" in message and "'JUDGE_TEST_KEY'" in message
    assert SECRET not in message
    monkeypatch.setenv("JUDGE_TEST_KEY", "")
    message, _ = rejected(tmp_path, population(http("member-llm")))
    assert "judge 'crowd': member 'member-llm': field 'api_key_env'" in message

    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)  # set: accepted, top level and as a member
    for text in (f"judges:\n  - {http()}\n", population(http("member-llm"))):
        path = tmp_path / "ok.yaml"
        path.write_text(text)
        check_manifest(load_manifest(path), str(path))
    path.write_text(f"judges:\n  - {http(api_key_env=None)}\n")  # no key needed: nothing to check
    monkeypatch.delenv("JUDGE_TEST_KEY")
    check_manifest(load_manifest(path), str(path))


def test_a_key_pasted_into_api_key_env_is_not_echoed(tmp_path, monkeypatch):
    message, _ = rejected(tmp_path, f"judges:\n  - {http(api_key_env=SECRET)}\n")  # not a variable name
    assert "judges[0] (name 'llm')" in message and "field 'api_key_env'" in message
    assert SECRET not in message
    pasted = SECRET.replace("-", "_")  # a valid variable name, but not an upper-case one: not printed
    monkeypatch.delenv(pasted, raising=False)
    message, _ = rejected(tmp_path, f"judges:\n  - {http(api_key_env=pasted)}\n")
    assert "judge 'llm'" in message and "field 'api_key_env'" in message and pasted not in message


# --------------------------------------------------------------------------- shipped manifests


def test_every_shipped_manifest_is_tested():
    assert sorted(p.stem for p in (REPO / "deploy" / "judges").glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_manifest_loads_and_passes_the_checks(name, monkeypatch):
    path = REPO / "deploy" / "judges" / f"{name}.yaml"
    manifest = load_manifest(path)
    check_manifest(manifest, str(path))
    assert manifest.judges and (manifest.eval is None or manifest.eval.kind in ("rule", "reward_model"))
    kinds = {j.kind for j in manifest.judges}
    expected = {
        "pairwise": {"pairwise"},
        "self": {"self"},
        "http": {"http"},
        "population": {"population"},
        "population-draw": {"population"},
        "mixture": {"rule", "reward_model"},
        "self-sharp": {"self"},
        "two_nodes": {"rule"},
    }
    if name in expected:
        assert kinds == expected[name]
    if name == "self-sharp":
        assert manifest.judges[0].verdict_temperature == 0.05
    if name == "population-draw":  # equal weights: a 2-of-3 majority, which can cycle
        (crowd,) = manifest.judges
        assert crowd.mode == "draw" and [m.weight for m in crowd.members] == [1.0, 1.0, 1.0]
        assert [m.temperature for m in crowd.members] == [0.0, 0.0, 0.0]


def test_docs_name_every_kind_field_and_shipped_manifest():
    from typing import get_args

    from protocols.judges import JUDGE_KINDS, JudgeSpec

    doc = (REPO / "docs" / "judges.md").read_text()
    for kind in JUDGE_KINDS:
        assert f"| `{kind}` |" in doc, kind
    for spec in get_args(get_args(JudgeSpec)[0]):
        for field in spec.model_fields:
            assert f"`{field}`" in doc, (spec.__name__, field)
    for name in SHIPPED:
        assert f"`deploy/judges/{name}.yaml`" in doc, name
