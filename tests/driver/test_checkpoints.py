"""Checkpoint mechanics (driver/checkpoints.py) and the resume error paths of driver/cli.py, without
Ray or a learner: atomic directories, what counts as complete, pruning, debris, the reference
identity, and a resume that must refuse before anything starts."""

from __future__ import annotations

import os

import pytest

from deploy.loading import dump_config
from driver import checkpoints
from driver.checkpoints import DriverState, EvalSamples
from driver.plan import resolve_plan
from protocols import RunConfig


def state(next_step: int, reference: str = "sha256:abc") -> DriverState:
    start = EvalSamples(version=0, rewards=(0.25, 0.75), lengths=(3, 4))
    return DriverState(
        next_step=next_step,
        prompt_position=next_step * 8,
        policy_version=next_step,
        reference=reference,
        probe=((1, 2, 3),),
        start=start,
        pool=(EvalSamples(version=next_step, rewards=(0.5,), lengths=(2,)),),
    )


def write(output, step: int, keep_last: int = 2, payload: str = "weights") -> None:
    tmp = checkpoints.begin(output, step)
    (tmp / "learner.bin").write_text(payload)
    checkpoints.commit(tmp, state(step), keep_last)


def names(output) -> list[str]:
    return sorted(p.name for p in checkpoints.checkpoint_root(output).iterdir())


def test_commit_is_atomic_prunes_to_keep_last_and_clears_debris(tmp_path):
    out = tmp_path / "run"
    assert checkpoints.complete_checkpoints(out) == []  # no checkpoints directory yet
    write(out, 4)
    half = checkpoints.begin(out, 8)  # a crash mid-write leaves only the temporary directory
    (half / "learner.bin").write_text("partial")
    assert names(out) == [".tmp-step-000008", "step-000004"]
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-000004"]
    (checkpoints.checkpoint_root(out) / "step-000006").mkdir()  # no driver.json: not complete
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-000004"]

    write(out, 8, payload="step 8")  # begin() starts the temporary directory afresh
    assert (checkpoints.checkpoint_root(out) / "step-000008" / "learner.bin").read_text() == "step 8"
    write(out, 12)
    write(out, 100)  # numeric order, not text order, decides which are the newest
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-000012", "step-000100"]
    assert names(out) == ["step-000006", "step-000012", "step-000100"]  # the incomplete one is not ours to delete
    loaded = checkpoints.load_state(checkpoints.complete_checkpoints(out)[-1])
    assert loaded == state(100)


@pytest.mark.parametrize("store", ["memory", "s3"])
def test_on_object_storage_a_checkpoint_is_written_in_place_and_complete_once_driver_json_is(tmp_path, request, store):
    # no atomic rename there: driver.json, written last, marks it complete; s3: a real S3 server (moto)
    run = f"memory://{tmp_path.name}/run" if store == "memory" else request.getfixturevalue("s3_bucket") + "/run"
    write(run, 4)
    half = checkpoints.begin(run, 8)
    (half / "learner.bin").write_text("partial")  # a crash mid-write
    assert str(half) == f"{run}/checkpoints/step-000008"
    assert [p.name for p in checkpoints.complete_checkpoints(run)] == ["step-000004"]
    write(run, 12)
    write(run, 16)
    assert names(run) == ["step-000012", "step-000016"]  # step 4 pruned (keep_last 2), the partial step 8 cleared
    assert (checkpoints.checkpoint_root(run) / "step-000016" / "learner.bin").read_text() == "weights"
    assert checkpoints.load_state(checkpoints.complete_checkpoints(run)[-1]) == state(16)
    write(run, 16, payload="again")  # re-reaching a step replaces it
    assert (checkpoints.checkpoint_root(run) / "step-000016" / "learner.bin").read_text() == "again"


def test_commit_replaces_a_checkpoint_of_the_same_step(tmp_path):
    out = tmp_path / "run"
    write(out, 4, payload="before the crash")
    write(out, 4, payload="after the resume")  # a resumed run re-reaching a step it had checkpointed
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-000004"]
    assert (checkpoints.checkpoint_root(out) / "step-000004" / "learner.bin").read_text() == "after the resume"
    assert names(out) == ["step-000004"]


def test_reference_identity_hashes_the_weight_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x00" * 10)
    (model / "config.json").write_text("{}")  # not a weight file: ignored
    first = checkpoints.reference_identity(str(model))
    assert first == "sha256:01d448afd928065458cf670b60f5a594d735af0172c8d67f22a81680132681ca"  # sha256 of 10 zero bytes
    (model / "config.json").write_text('{"changed": true}')
    assert checkpoints.reference_identity(str(model)) == first
    (model / "model.safetensors").write_bytes(b"\x00" * 9 + b"\x01")
    assert checkpoints.reference_identity(str(model)) != first
    assert checkpoints.reference_identity("org/model-on-the-hub") == "id:org/model-on-the-hub"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert checkpoints.reference_identity(str(empty)) == f"id:{empty}"


def test_resume_refuses_without_a_checkpoint_or_with_another_starting_policy(builtin_models, tmp_path):
    from driver.cli import launch_decision
    from driver.resume import ResumeRefused

    out = tmp_path / "run"
    plan = resolve_plan(RunConfig(output=str(out), checkpoint={"every": 4}), None, resume=True)
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(ResumeRefused, match="has no complete checkpoint to resume from"):
        launch_decision(plan, "resume", str(builtin_models.policy))
    checkpoints.begin(out, 4)  # only an unfinished one
    with pytest.raises(ResumeRefused, match="has no complete checkpoint to resume from"):
        launch_decision(plan, "resume", str(builtin_models.policy))

    tmp = checkpoints.begin(out, 4)
    for name in ("learner/mp_rank_00_model_states.pt", "opponents.pt"):
        (tmp / name).parent.mkdir(exist_ok=True)
        (tmp / name).write_text("weights")
    dump_config(plan.cfg, tmp / "config.yaml")
    checkpoints.commit(tmp, state(4, reference="sha256:" + "0" * 64), keep_last=2)
    with pytest.raises(ResumeRefused, match=r"is not the one .*step-000004 was trained from"):
        launch_decision(plan, "resume", str(builtin_models.policy))
    assert not (out / "config.yaml").exists()  # refused before writing anything into the run


def test_a_finished_run_directory_is_not_reused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("")  # a directory without a run in it is fine
    resolve_plan(RunConfig(output=str(out)), None)
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(
        ValueError,
        match=r"already holds a run \(metrics.jsonl\); choose another --output, or continue "
        r"it \(`--resume .*`, or this command with `--resume-mode auto`\)",
    ):
        resolve_plan(RunConfig(output=str(out)), None)
    assert resolve_plan(RunConfig(output=str(out)), None, resume=True).output == out  # --resume continues it
    assert set(os.listdir(out)) == {"config.yaml", "metrics.jsonl"}  # planning writes nothing
