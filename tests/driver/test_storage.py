"""driver/storage.py: which way each learner rank's files go, and the run directory's copy in storage."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
from upath import UPath

from deploy.loading import ConfigError
from driver import cli
from driver import storage as run_storage


@pytest.fixture
def on_node_a(monkeypatch):
    monkeypatch.setattr(run_storage, "this_node", lambda: "node-a")


def test_ranks_on_other_nodes_return_their_files_unless_storage_is_shared(on_node_a, tmp_path):
    local = UPath(tmp_path / "run" / "checkpoints" / ".tmp-step-000002")
    assert run_storage.save_targets(["node-a", "node-b"], local, shared=False) == [str(local), None]
    assert run_storage.save_targets(["node-a", "node-b"], local, shared=True) == [str(local), str(local)]
    shared_fs = UPath(f"file://{tmp_path}/store/checkpoints/step-000002")  # a shared filesystem: a plain path
    assert run_storage.save_targets(["node-b"], shared_fs, shared=True) == [f"{tmp_path}/store/checkpoints/step-000002"]
    relative = UPath("runs/x/checkpoints/.tmp-step-000002")  # (the default run directory is relative)
    assert run_storage.save_targets(["node-a"], relative, shared=False) == [str(Path.cwd() / relative.path)]
    bucket = UPath("memory://bucket/run/checkpoints/step-000002")
    assert run_storage.save_targets(["node-b"], bucket, shared=True) == ["memory://bucket/run/checkpoints/step-000002"]


def test_returned_files_are_written_where_the_checkpoint_is(tmp_path):
    target = UPath(tmp_path / "ckpt")
    count = run_storage.write_returned([None, {"learner/zero_pp_rank_1_optim_states.pt": b"rank 1"}, {}], target)
    assert count == 1
    assert (tmp_path / "ckpt" / "learner" / "zero_pp_rank_1_optim_states.pt").read_bytes() == b"rank 1"


def test_a_checkpoint_is_sent_once_to_ranks_off_the_drivers_node(on_node_a, tmp_path, monkeypatch):
    checkpoint = tmp_path / "step-000004"
    (checkpoint / "learner").mkdir(parents=True)
    (checkpoint / "learner" / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    put = []
    monkeypatch.setattr(run_storage.ray, "put", lambda value: put.append(value) or f"ref{len(put)}")
    here = run_storage.load_arguments(["node-a", "node-a"], UPath(checkpoint), shared=False)
    assert here == [(str(checkpoint), None)] * 2 and put == []
    mixed = run_storage.load_arguments(["node-a", "node-b", "node-c"], UPath(checkpoint), shared=False)
    assert mixed == [(str(checkpoint), None), (str(checkpoint), "ref1"), (str(checkpoint), "ref1")]
    assert put == [{"learner/mp_rank_00_model_states.pt": b"weights"}]  # packed and put once
    assert run_storage.load_arguments(["node-b"], UPath(checkpoint), shared=True) == [(str(checkpoint), None)]


def make_run_directory(out: Path) -> None:
    (out / "final").mkdir(parents=True)
    (out / "config.yaml").write_text("algo: mnpo\n")
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    (out / "summary.json").write_text('{"steps": 1}')
    (out / "final" / "model.safetensors").write_bytes(b"w")
    (out / ".lock").write_text("123")
    (out / ".final-tmp").mkdir()
    (out / ".final-tmp" / "half").write_text("x")
    (out / "checkpoints" / "step-000002").mkdir(parents=True)
    (out / "checkpoints" / "step-000002" / "driver.json").write_text("{}")


def test_the_run_directory_is_copied_to_storage_and_fetched_back(tmp_path, monkeypatch):
    out, store = tmp_path / "run", f"memory://{tmp_path.name}/store"
    make_run_directory(out)
    fs = fsspec.filesystem("memory")
    order: list[str] = []
    real_put = type(fs).put_file
    monkeypatch.setattr(
        type(fs), "put_file", lambda self, lpath, rpath, **kw: order.append(rpath) or real_put(self, lpath, rpath, **kw)
    )
    sent = run_storage.mirror(out, store)
    copied = sorted(p.rsplit("/store/", 1)[1] for p in order)
    assert copied == [
        "config.yaml",
        "final/model.safetensors",
        "metrics.jsonl",
        "summary.json",
    ]  # no lock, temporaries, checkpoints
    assert order[-1].endswith("/summary.json")  # what marks a run finished goes last
    assert sent == sum(len(p.read_bytes()) for p in (out / "config.yaml", out / "metrics.jsonl", out / "summary.json")) + 1

    elsewhere = tmp_path / "other-machine"
    assert run_storage.fetch_records(store, elsewhere) == 4
    assert (elsewhere / "metrics.jsonl").read_text() == '{"step": 0}\n'
    assert (elsewhere / "final" / "model.safetensors").read_bytes() == b"w"
    with pytest.raises(FileNotFoundError, match="holds no run"):
        run_storage.fetch_records(f"memory://{tmp_path.name}/nothing", tmp_path / "x")


def test_resume_from_storage_refuses_a_local_directory_that_is_not_empty(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=f"the local run directory {busy} is not empty"):
        cli.fetch_run("memory://somewhere/run", str(busy))
    assert (busy / "metrics.jsonl").read_text() == "{}\n"  # untouched
