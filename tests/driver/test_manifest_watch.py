"""driver/manifest_watch.py: a changed manifest is checked once and accepted or rejected with a reason."""

from __future__ import annotations

import os

from deploy.loading import load_manifest
from driver.manifest_watch import ManifestWatcher

RULE = "judges:\n  - {{name: {name}, kind: rule, function: 'rollout.tasks.wordlist:{fn}'}}\n"


def write(path, text: str, bump: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000))  # distinct mtimes within one tick


def test_accepts_a_good_change_rejects_a_bad_one_once(tmp_path):
    path = tmp_path / "judges.yaml"
    write(path, RULE.format(name="ground-truth", fn="ground_truth"), 0)
    watcher = ManifestWatcher(path, "mnpo", load_manifest(path))
    assert watcher.poll() is None  # unchanged

    write(path, RULE.format(name="topical", fn="topical"), 1)
    change = watcher.poll()
    assert change.reason is None and [j.name for j in change.manifest.judges] == ["topical"]
    assert watcher.poll() is None

    write(path, RULE.format(name="broken", fn="no_such_function"), 2)
    change = watcher.poll()
    assert change.manifest is None
    assert "broken" in change.reason and "function" in change.reason and "no_such_function" in change.reason
    write(path, RULE.format(name="broken", fn="no_such_function"), 3)  # saved again, same content
    assert watcher.poll() is None
    assert [j.name for j in watcher.current.judges] == ["topical"]  # still the last good one


def test_rejects_judges_the_algorithm_cannot_use_and_keeps_the_eval_judge(tmp_path):
    path = tmp_path / "judges.yaml"
    write(path, RULE.format(name="ground-truth", fn="ground_truth"), 0)
    watcher = ManifestWatcher(path, "osp", load_manifest(path))
    write(path, RULE.format(name="topical", fn="topical"), 1)
    change = watcher.poll()
    assert change.manifest is None and "kind 'self'" in change.reason

    watcher = ManifestWatcher(path, "mnpo", load_manifest(path))
    text = RULE.format(name="varied", fn="varied") + (
        "eval: {name: other, kind: rule, function: 'rollout.tasks.wordlist:topical'}\n"
    )
    write(path, text, 2)
    change = watcher.poll()
    assert [j.name for j in change.manifest.judges] == ["varied"]
    assert change.manifest.eval is None  # the run's eval judge stays


def test_a_deleted_manifest_is_reported_once_and_a_new_file_is_read(tmp_path, caplog):
    import logging

    path = tmp_path / "judges.yaml"
    write(path, RULE.format(name="ground-truth", fn="ground_truth"), 0)
    watcher = ManifestWatcher(path, "mnpo", load_manifest(path))
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="driver"):
        assert watcher.poll() is None and watcher.poll() is None  # the run keeps its judges
    gone = [r for r in caplog.records if "is gone (deleted or moved); keeping the current judges" in r.getMessage()]
    assert len(gone) == 1 and str(path) in gone[0].getMessage()  # once, not every step
    write(path, RULE.format(name="topical", fn="topical"), 0)  # saved at the path again
    change = watcher.poll()
    assert change is not None and [j.name for j in change.manifest.judges] == ["topical"]
    path.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="driver"):
        watcher.poll()
    assert "is gone" in caplog.text  # a second disappearance is reported again
