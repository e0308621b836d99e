"""The run config's allow-lists (`security.allowed_modules`, `security.allowed_http_hosts`;
docs/security.md), checked by driver/plan.py `check_manifest` at start and by the manifest
watcher on every swap: a rule function from another module is refused before it is imported, an
http judge pointing at another host is refused before any request. No Ray."""

from __future__ import annotations

import os

import pytest

from deploy.loading import load_manifest
from driver.manifest_watch import ManifestWatcher
from driver.plan import check_manifest, resolve_plan
from protocols import HttpJudgeSpec, JudgeManifest, PopulationJudgeSpec, RuleJudgeSpec, RunConfig
from protocols.config import SecurityConfig

GT = RuleJudgeSpec(name="gt", kind="rule", function="rollout.tasks.wordlist:ground_truth")
TASKS_ONLY = SecurityConfig(allowed_modules=("rollout.tasks",))


def http(base_url: str) -> HttpJudgeSpec:
    return HttpJudgeSpec(name="llm", kind="http", base_url=base_url, model="judge")


def test_defaults_allow_anything():
    assert SecurityConfig().allowed_modules is None and SecurityConfig().allowed_http_hosts is None
    check_manifest(JudgeManifest(judges=(GT, http("https://api.example.com/v1"))), "m.yaml", SecurityConfig())


def test_a_rule_function_outside_the_allowed_modules_is_refused_before_it_is_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "payload.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef judge(p, r):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = JudgeManifest(judges=(GT, RuleJudgeSpec(name="evil", kind="rule", function="payload:judge")))
    with pytest.raises(ValueError) as info:
        check_manifest(manifest, "m.yaml", TASKS_ONLY)
    assert str(info.value) == (
        "m.yaml: judge 'evil': field 'function': module 'payload' is not in "
        "security.allowed_modules ['rollout.tasks']; it was not imported"
    )
    assert not marker.exists()  # importing a module runs its code: it never happened
    check_manifest(manifest, "m.yaml", SecurityConfig(allowed_modules=("rollout.tasks", "payload")))
    assert marker.exists()  # allowed: imported, as any rule judge's module is checked


@pytest.mark.parametrize(
    ("allowed", "ok"),
    [
        (("rollout.tasks",), True),
        (("rollout",), True),
        (("rollout.tasks.wordlist",), True),
        (("rollout.task",), False),
        (("rollout.tasks.wordlist.x",), False),
        ((), False),
    ],
)
def test_a_module_allows_itself_and_its_submodules_only(allowed, ok):
    manifest = JudgeManifest(judges=(GT,))
    if ok:
        check_manifest(manifest, "m.yaml", SecurityConfig(allowed_modules=allowed))
    else:
        with pytest.raises(ValueError, match="is not in security.allowed_modules"):
            check_manifest(manifest, "m.yaml", SecurityConfig(allowed_modules=allowed))


def test_population_members_and_the_eval_judge_are_checked_too():
    member = {"name": "m", "kind": "rule", "function": "os.path:exists"}
    crowd = PopulationJudgeSpec(name="crowd", kind="population", members=(member,))
    with pytest.raises(ValueError, match="judge 'crowd': member 'm': field 'function': module 'os.path'"):
        check_manifest(JudgeManifest(judges=(crowd,)), "m.yaml", TASKS_ONLY)
    other = RuleJudgeSpec(name="ev", kind="rule", function="os.path:exists")
    with pytest.raises(ValueError, match="judge 'ev': field 'function'"):
        check_manifest(JudgeManifest(judges=(GT,), eval=other), "m.yaml", TASKS_ONLY)


@pytest.mark.parametrize(
    ("base_url", "ok"),
    [
        ("http://127.0.0.1:8000/v1", True),  # host:port listed
        ("http://127.0.0.1:8001/v1", False),  # another port of that host
        ("https://API.example.com/v1", True),  # host listed without a port: any port; case-insensitive
        ("https://api.example.com:8443/v1", True),
        ("https://api.example.com.evil.net/v1", False),
        ("http://user:pw@evil.net/v1?x=api.example.com", False),
    ],
)
def test_http_judges_may_only_send_to_the_allowed_hosts(base_url, ok):
    security = SecurityConfig(allowed_http_hosts=("127.0.0.1:8000", "api.example.com"))
    manifest = JudgeManifest(judges=(http(base_url),))
    if ok:
        check_manifest(manifest, "m.yaml", security)
    else:
        with pytest.raises(
            ValueError,
            match=r"field 'base_url': host .* is not in security.allowed_http_hosts "
            r"\['127.0.0.1:8000', 'api.example.com'\]; the judge's prompts and API key",
        ):
            check_manifest(manifest, "m.yaml", security)


def test_the_start_and_every_swap_keep_to_the_allow_lists(tmp_path):
    cfg = RunConfig(output=str(tmp_path / "run"), security=TASKS_ONLY)
    resolve_plan(cfg, JudgeManifest(judges=(GT,)))  # the task's ground truth: allowed
    with pytest.raises(ValueError, match="module 'os.path' is not in security.allowed_modules"):
        resolve_plan(cfg, JudgeManifest(judges=(RuleJudgeSpec(name="x", kind="rule", function="os.path:exists"),)))

    path = tmp_path / "judges.yaml"
    path.write_text("judges:\n  - {name: gt, kind: rule, function: 'rollout.tasks.wordlist:ground_truth'}\n")
    watcher = ManifestWatcher(path, "mnpo", load_manifest(path), TASKS_ONLY)
    path.write_text("judges:\n  - {name: x, kind: rule, function: 'os.path:exists'}\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    change = watcher.poll()
    assert change.manifest is None and "not in security.allowed_modules" in change.reason
