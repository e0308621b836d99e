"""What a launch on a run directory that holds a run does (driver/resume.py, driver/cli.py), without
Ray: the checkpoint's config is the run's, finished runs stay as they are, --steps cannot delete
records, a corrupt newest checkpoint falls back to the previous one, and the driver's one-line
errors and exit statuses. The real-run counterpart (SIGTERM -> checkpoint -> resume) is
tests/e2e/test_resume.py."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
from pathlib import Path

import pytest
from upath import UPath

from deploy.loading import config_yaml, dump_config
from driver import checkpoints, cli
from driver.checkpoints import DiskFull, DriverState, EvalSamples
from driver.cluster import StageTimeout
from driver.faults import RunFailed
from driver.judge_failures import JudgeFailureError
from driver.resume import ResumeRefused, config_changes, decide, newest_usable
from driver.run import Summary
from driver.signals import Aborted, StopSignals
from learner.algorithms import resolved
from protocols import EvalResult, RunConfig, WinRate


def config(out, **fields) -> RunConfig:
    return resolved(RunConfig(output=str(out), **{"checkpoint": {"every": 2}, **fields}))


def evaluation(step: int) -> EvalResult:
    rate = WinRate(win_rate=0.75, ci_low=0.6, ci_high=0.9, num_prompts=8, num_comparisons=8)
    return EvalResult(step=step, judge="ground-truth", vs_start=rate, mean_response_tokens=3.0, start_mean_response_tokens=3.0)


def make_checkpoint(out, step: int, cfg: RunConfig, last_eval: EvalResult | None = None) -> None:
    """Written as Loop.checkpoint writes one (the learner's files stood in for)."""
    start = EvalSamples(version=0, rewards=(0.5,), lengths=(3,))
    state = DriverState(
        next_step=step,
        prompt_position=8 * step,
        policy_version=step,
        reference="sha256:abc",
        probe=((1, 2),),
        start=start,
        last_eval=last_eval,
    )
    with checkpoints.writing(out, step) as tmp:
        (tmp / "learner").mkdir()
        (tmp / "learner" / "mp_rank_00_model_states.pt").write_text(f"weights of step {step}")
        (tmp / "learner" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_text("optimizer")
        (tmp / "opponents.pt").write_text("ring")  # MNPO (the default) keeps an opponent ring
        (tmp / "config.yaml").write_text(config_yaml(cfg))
        checkpoints.commit(tmp, state, keep_last=3)


def make_run(out, steps_done: int, cfg: RunConfig, finished: bool) -> None:
    """A run directory as the driver leaves it: records of steps_done steps, a checkpoint every 2
    steps (the last step's included), and summary.json + final/ if it finished."""
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    with (out / "metrics.jsonl").open("w") as f:
        f.writelines(json.dumps({"step": s, "learner/loss": 1.0 / (s + 1)}) + "\n" for s in range(steps_done))
    for step in range(2, steps_done + 1, 2):
        make_checkpoint(out, step, cfg, last_eval=evaluation(step - 1) if finished and step == steps_done else None)
    if finished:
        (out / "final").mkdir()
        (out / "final" / "model.safetensors").write_text("final weights")
        (out / "summary.json").write_text(json.dumps({"steps": steps_done, "final_eval": None}))


def snapshot(out) -> dict[str, tuple[int, bytes]]:
    """Every file with its mtime and content: 'nothing changed' means this is equal before and after."""
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ---------------------------------------------------------------------- the config
def test_config_changes_name_every_changed_field_but_steps_address_and_output(tmp_path):
    saved = config(tmp_path / "a")
    assert config_changes(saved, config(tmp_path / "b", steps=900, address="10.0.0.1:6379")) == []
    edited = config(tmp_path / "a", algo="dpo", learner={"lr": 1e-3}, seed=7)
    assert config_changes(saved, edited) == [
        "algo 'mnpo' -> 'dpo'",
        "dpo (added)",
        "learner.lr 0.0002 -> 0.001",
        "mnpo (removed)",
        "seed 0 -> 7",
    ]


def test_an_edited_config_yaml_is_refused_naming_the_fields(tmp_path):
    out = tmp_path / "run"
    make_run(out, 4, config(out, steps=10), finished=False)
    edited = config(out, steps=10, learner={"lr": 5e-4})
    with pytest.raises(
        ResumeRefused,
        match=r"differs from the checkpoint's \(.*step-000004/config.yaml\) in "
        r"learner.lr 0.0002 -> 0.0005; a run continues with the config",
    ):
        decide(out, edited, "resume")
    with pytest.raises(ResumeRefused, match=r"this command's config differs .* in algo 'mnpo' -> 'dpo'; dpo \(added\)"):
        decide(out, config(out, algo="dpo", steps=10), "auto")
    assert decide(out, config(out, steps=12, address="auto"), "resume").action == "continue"
    # timeouts and restarts do not change what is computed: a relaunch may set them
    patient = config(out, steps=10, reliability={"sample_timeout_s": 3600.0, "max_restarts": 9})
    assert decide(out, patient, "auto").action == "continue"


# ---------------------------------------------------------------------- finished runs and --steps
def test_a_finished_run_is_left_as_it_is(tmp_path):
    out = tmp_path / "run"
    make_run(out, 6, config(out, steps=6), finished=True)
    before = snapshot(out)
    for mode in ("resume", "auto"):
        decision = decide(out, config(out, steps=6), mode)
        assert decision.action == "finished" and decision.checkpoint is None
        assert "already finished its 6 steps" in decision.message
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (3, r"steps=3 is below step 6 of the last checkpoint .*step-000006\): the run is already past step 3"),
        (5, r"steps=5 is below step 6 of the last checkpoint"),
    ],
)
def test_fewer_steps_than_the_last_checkpoint_are_refused(tmp_path, steps, message):
    out = tmp_path / "run"
    make_run(out, 6, config(out, steps=6), finished=True)
    with pytest.raises(ResumeRefused, match=message):
        decide(out, config(out, steps=steps), "resume")


def test_a_finished_run_is_extended_only_from_a_checkpoint_of_its_last_step(tmp_path):
    ends_on_a_checkpoint, ends_between = tmp_path / "six", tmp_path / "seven"
    make_run(ends_on_a_checkpoint, 6, config(ends_on_a_checkpoint, steps=6), finished=True)
    decision = decide(ends_on_a_checkpoint, config(ends_on_a_checkpoint, steps=10), "resume")
    assert decision.action == "continue" and decision.checkpoint.step == 6  # nothing past it to delete

    # an extension that crashed after its checkpoint at step 8: the old summary.json still says 6
    make_checkpoint(ends_on_a_checkpoint, 8, config(ends_on_a_checkpoint, steps=10))
    assert decide(ends_on_a_checkpoint, config(ends_on_a_checkpoint, steps=10), "resume").checkpoint.step == 8
    with pytest.raises(ResumeRefused, match=r"steps=6 is below step 8 of the last checkpoint"):
        decide(ends_on_a_checkpoint, config(ends_on_a_checkpoint, steps=6), "resume")

    make_run(ends_between, 7, config(ends_between, steps=7), finished=True)  # last checkpoint: step 6
    with pytest.raises(
        ResumeRefused,
        match=r"finished 7 steps but its last checkpoint is at step 6: extending it "
        r"to 10 would delete and redo steps 6..6 and its final evaluation",
    ):
        decide(ends_between, config(ends_between, steps=10), "resume")
    make_checkpoint(ends_between, 4, config(ends_between, steps=7))
    with pytest.raises(ResumeRefused, match=r"below step 6"):
        decide(ends_between, config(ends_between, steps=5), "resume")


def test_steps_between_the_checkpoint_and_the_end_would_cut_a_finished_run_short(tmp_path):
    out = tmp_path / "run"
    make_run(out, 8, config(out, steps=8), finished=True)
    for step in (8,):  # drop the end checkpoint: the newest usable one is step 6
        (checkpoints.checkpoint_root(out) / f"step-{step:06d}" / "driver.json").unlink()
    with pytest.raises(
        ResumeRefused,
        match=r"finished 8 steps; steps=7 would cut it short, deleting the records "
        r"of steps 7..7 and its final evaluation",
    ):
        decide(out, config(out, steps=7), "resume")


def test_an_unfinished_run_continues_from_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    make_run(out, 5, config(out, steps=10), finished=False)  # crashed in step 5; checkpoints 2, 4
    decision = decide(out, config(out, steps=10), "auto")
    assert decision.action == "continue" and decision.checkpoint.step == 4
    assert decide(out, config(out, steps=5), "resume").checkpoint.step == 4  # fewer steps, still past 4
    with pytest.raises(ResumeRefused, match=r"steps=4 is the step of the last checkpoint .*: nothing is left to train"):
        decide(out, config(out, steps=4), "resume")
    # a crash while writing final/: the last step's checkpoint (with the final eval) is finished from
    make_checkpoint(out, 6, config(out, steps=6), last_eval=evaluation(5))
    assert decide(out, config(out, steps=6), "resume").checkpoint.step == 6


def test_which_directories_a_fresh_or_an_auto_launch_takes(tmp_path):
    out = tmp_path / "run"
    assert decide(out, config(out), "never").action == "start"
    assert decide(out, config(out), "auto").action == "start"
    with pytest.raises(ResumeRefused, match="holds no run to resume"):
        decide(out, config(out), "resume")
    make_run(out, 1, config(out), finished=False)  # stopped before its first checkpoint
    with pytest.raises(ResumeRefused, match=r"already holds a run; choose another --output, or continue it"):
        decide(out, config(out), "never")
    with pytest.raises(ResumeRefused, match=r"has no complete checkpoint to resume from \(the run stopped before"):
        decide(out, config(out), "auto")


def test_an_unreadable_summary_is_not_taken_for_an_unfinished_run(tmp_path):
    out = tmp_path / "run"
    make_run(out, 6, config(out, steps=6), finished=True)
    (out / "summary.json").write_text("{trunc")
    with pytest.raises(ResumeRefused, match=r"summary.json is unreadable .*the run may have finished"):
        decide(out, config(out, steps=10), "resume")


# ---------------------------------------------------------------------- a corrupt newest checkpoint
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda c: (c / "driver.json").write_text('{"next_step": 6, "prompt_pos'), "driver.json is unreadable"),
        (lambda c: (c / "driver.json").unlink(), "no driver.json"),
        (lambda c: (c / "learner" / "mp_rank_00_model_states.pt").unlink(), "no DeepSpeed model states under learner/"),
        (lambda c: (c / "opponents.pt").unlink(), "no opponents.pt"),
        (lambda c: (c / "config.yaml").write_text("algo: [\n"), "config.yaml"),
        (
            lambda c: (c / "learner" / "mp_rank_00_model_states.pt").write_bytes(b""),
            "empty file learner/mp_rank_00_model_states.pt",
        ),
    ],
)
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage, reason):
    out = tmp_path / "run"
    make_run(out, 7, config(out, steps=10), finished=False)
    newest = checkpoints.checkpoint_root(out) / "step-000006"
    damage(newest)
    with caplog.at_level(logging.WARNING, logger="driver"):
        found = newest_usable(out)
    assert found is not None and found.step == 4
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and str(newest) in warning[0] and reason in warning[0]
    assert str(checkpoints.checkpoint_root(out) / "step-000004") in warning[0]
    assert decide(out, config(out, steps=10), "resume").checkpoint.step == 4
    assert newest.exists()  # kept, for whoever looks into what happened


def test_in_flight_steps_are_saved_with_the_checkpoint_and_checked_on_resume(tmp_path, caplog):
    """With max_staleness > 0 the steps sampled ahead of the learner are part of the checkpoint:
    read back as written, and a checkpoint whose inflight.json is missing or names other steps is
    not usable (the previous one is used)."""
    from protocols import Judgement, Rollout, RolloutBatch

    out = tmp_path / "run"
    make_run(out, 4, config(out, steps=10), finished=False)
    rollouts = tuple(
        Rollout(
            prompt_id="p0",
            prompt_text="list 3 fruits:",
            prompt_token_ids=(1, 2),
            response_token_ids=(3, 4 + i),
            response_text="x",
            logprobs=(-0.5, -0.25),
            policy_version=3,
            finish_reason="stop",
        )  # fmt: skip
        for i in range(2)
    )
    batch = RolloutBatch(step=4, samples_per_prompt=2, rollouts=rollouts, policy_version=3)
    ahead = checkpoints.InFlightStep(step=4, batches=(batch,), judgements=((Judgement(judge="gt", rewards=(1.0, 0.0)),),))
    state = DriverState(
        next_step=6, prompt_position=8 * 7, in_flight=(6,), policy_version=6, reference="sha256:abc", probe=((1, 2),),
        start=EvalSamples(version=0, rewards=(0.5,), lengths=(3,)),
    )  # fmt: skip
    with checkpoints.writing(out, 6) as tmp:
        (tmp / "learner").mkdir()
        (tmp / "learner" / "mp_rank_00_model_states.pt").write_text("weights")
        (tmp / "opponents.pt").write_text("ring")
        checkpoints.save_in_flight(tmp, [ahead.model_copy(update={"step": 6})])
        dump_config(config(out, steps=10), tmp / "config.yaml")
        newest = checkpoints.commit(tmp, state, keep_last=3)
    (loaded,) = checkpoints.load_in_flight(newest, state)
    assert loaded.step == 6 and loaded.batches == (batch,) and loaded.judgements[0][0].rewards == (1.0, 0.0)
    assert decide(out, config(out, steps=10), "resume").checkpoint.step == 6

    (newest / checkpoints.IN_FLIGHT_FILE).write_text(json.dumps([ahead.model_dump(mode="json")]))  # step 4, not 6
    with pytest.raises(ValueError, match=r"inflight.json: holds steps \[4\], driver.json names \[6\]"):
        checkpoints.load_in_flight(newest, state)
    (newest / checkpoints.IN_FLIGHT_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="driver"):
        assert decide(out, config(out, steps=10), "resume").checkpoint.step == 4
    assert "inflight.json" in caplog.text


def test_no_usable_checkpoint_is_one_error_naming_each(tmp_path):
    out = tmp_path / "run"
    make_run(out, 4, config(out, steps=10), finished=False)
    for step in (2, 4):
        (checkpoints.checkpoint_root(out) / f"step-{step:06d}" / "driver.json").write_text("")
    with pytest.raises(
        ResumeRefused,
        match=r"no usable checkpoint in .*checkpoints: step-000004: driver.json is "
        r"unreadable.*; step-000002: driver.json is unreadable",
    ):
        decide(out, config(out, steps=10), "resume")


# ---------------------------------------------------------------------- a full disk
def test_enospc_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = config(out, steps=10)
    make_checkpoint(out, 2, cfg)
    before = snapshot(out)
    real_write = type(out).write_text

    def full_disk(path, text, *args, **kwargs):
        if path.name == "driver.json":  # the commit's last write
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, text, *args, **kwargs)

    monkeypatch.setattr(type(out), "write_text", full_disk)
    with pytest.raises(DiskFull) as caught:
        make_checkpoint(out, 4, cfg)
    monkeypatch.undo()
    message = str(caught.value)
    assert message.startswith(
        "disk full: no space left on the device writing checkpoint step-000004 under "
        f"{checkpoints.checkpoint_root(out).resolve()} ("
    )
    assert f"the previous checkpoint {checkpoints.checkpoint_root(out) / 'step-000002'} is intact" in message
    assert "\n" not in message
    assert snapshot(out) == before  # the temporary directory is gone, step 2 untouched
    assert sorted(p.name for p in checkpoints.checkpoint_root(out).iterdir()) == ["step-000002"]


def test_disk_full_is_recognised_through_ray_and_torch_errors(tmp_path, monkeypatch):
    import ray

    out = tmp_path / "run"
    enospc = OSError(errno.ENOSPC, "No space left on device")
    remote = ray.exceptions.RayTaskError("save_checkpoint", "Traceback ...", enospc).as_instanceof_cause()
    with pytest.raises(DiskFull, match="there is no earlier checkpoint to resume from"):
        with checkpoints.writing(out, 2):
            raise remote
    torch_error = RuntimeError(
        "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/3: file write failed"
    )
    with pytest.raises(RuntimeError, match="file write failed"):  # with space left it is some other failure
        with checkpoints.writing(out, 2):
            raise torch_error
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 4096)
    with pytest.raises(DiskFull, match=r"\(0.0 MiB free there when the write failed\)"):
        with checkpoints.writing(out, 2):
            raise torch_error
    assert not list(checkpoints.checkpoint_root(out).iterdir())


# ---------------------------------------------------------------------- final/ and summary.json
def test_final_is_replaced_only_once_the_new_one_is_complete(tmp_path, monkeypatch):
    from driver.run import replace_directory, write_atomically

    final, new = tmp_path / "final", tmp_path / ".final-tmp"
    final.mkdir()
    (final / "model.safetensors").write_text("old")
    new.mkdir()
    (new / "model.safetensors").write_text("new")
    real_rename = os.rename

    def crash_before_the_new_one_is_in_place(src, dst):
        if str(src) == str(new):
            raise OSError("killed")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_before_the_new_one_is_in_place)
    with pytest.raises(OSError):
        replace_directory(new, final)
    assert (tmp_path / ".final-old" / "model.safetensors").read_text() == "old"  # set aside, not deleted
    monkeypatch.undo()
    replace_directory(new, final)
    assert (final / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]

    summary = tmp_path / "summary.json"
    summary.write_text('{"steps": 6}')
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        write_atomically(summary, '{"steps": 10}')
    assert summary.read_text() == '{"steps": 6}'


# ---------------------------------------------------------------------- the command line
def resume_dir(tmp_path, builtin_models, steps_done: int, finished: bool, steps: int = 6):
    out = tmp_path / "run"
    cfg = config(out, steps=steps, model={"path": str(builtin_models.policy)})
    make_run(out, steps_done, cfg, finished)
    identity = checkpoints.reference_identity(str(builtin_models.policy))
    for path in checkpoints.complete_checkpoints(out):  # trained from the built-in policy
        state = checkpoints.load_state(path)
        (path / "driver.json").write_text(state.model_copy(update={"reference": identity}).model_dump_json())
    return out


def no_run(*args, **kwargs):
    raise AssertionError("the run must not start")


def one_error_line(capsys, code: int, excinfo) -> str:
    assert excinfo.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driver: error: "), lines
    return lines[0]


def test_cli_finished_run_exits_0_and_changes_nothing(builtin_models, tmp_path, monkeypatch, caplog):
    import driver.run

    out = resume_dir(tmp_path, builtin_models, 6, finished=True)
    monkeypatch.setattr(driver.run, "run", no_run)
    before = snapshot(out)
    with caplog.at_level(logging.INFO, logger="driver"):
        cli.main(["--resume", str(out)])
    assert any("already finished its 6 steps" in r.getMessage() for r in caplog.records)
    assert snapshot(out) == before


def test_cli_refuses_fewer_steps_and_an_edited_config(builtin_models, tmp_path, monkeypatch, capsys):
    import driver.run

    out = resume_dir(tmp_path, builtin_models, 6, finished=True)
    monkeypatch.setattr(driver.run, "run", no_run)
    before = snapshot(out)
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--resume", str(out), "--steps", "5"])
    assert "steps=5 is below step 6 of the last checkpoint" in one_error_line(capsys, 2, excinfo)

    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(text.replace("lr: 0.0002", "lr: 0.001"))
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--resume", str(out), "--steps", "8"])
    assert "learner.lr 0.0002 -> 0.001" in one_error_line(capsys, 2, excinfo)
    after = snapshot(out)
    assert after.pop("config.yaml") != before.pop("config.yaml")  # (the edit) and nothing else changed
    assert after == before


def test_cli_a_second_driver_on_the_directory_fails_at_once_naming_the_holder(builtin_models, tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    import driver.run

    out = resume_dir(tmp_path, builtin_models, 3, finished=False)
    monkeypatch.setattr(driver.run, "run", no_run)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from driver.lock import RunLock; "
            f"lock = RunLock({str(out)!r}); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as excinfo:
            cli.main(["--resume", str(out)])
        line = one_error_line(capsys, 2, excinfo)
        assert f"run directory {str(out.resolve())!r} is in use by another driver (pid {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the killed holder's lock: the directory is free again
    from driver.lock import RunLock

    with RunLock(out) as lock:
        assert (out / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(cli.LockHeld, match=f"pid {os.getpid()}"):
            RunLock(out)
    assert lock._fd is None


@pytest.mark.parametrize(
    ("outcome", "code", "start"),
    [
        (
            DiskFull("disk full: no space left on the device writing checkpoint step-000004 under /x"),
            74,
            "driver: error: disk full: no space left on the device writing checkpoint step-000004",
        ),
        (
            Aborted(signal.SIGTERM),
            143,
            "driver: aborted by a second SIGTERM: the step in progress is lost; the run continues from its last checkpoint",
        ),
        (
            Summary(steps=3, seconds=1.0, final_eval=None, stopped="SIGINT", checkpoint=Path("c/step-000003")),
            75,
            "driver: stopped by SIGINT after step 3 of 6; checkpoint c/step-000003; continue with `python -m driver --resume",
        ),
        (
            StageTimeout("step 4's samples: no answer from rollout-1 within 900s (reliability.sample_timeout_s)"),
            70,
            "driver: error: step 4's samples: no answer from rollout-1 within 900s (reliability.sample_timeout_s); it wrote "
            "no checkpoint: run the command again to start over",
        ),
        (
            RunFailed("learner-0 died at step 9 (ActorDiedError: x) and the run has used its 3 restarts"),
            70,
            "driver: error: learner-0 died at step 9 (ActorDiedError: x) and the run has used its 3 restarts;",
        ),
        (
            JudgeFailureError("judge 'flaky' has missed 9 of 30 verdicts, above its max_skipped_fraction 0.25"),
            70,
            "driver: error: judge 'flaky' has missed 9 of 30 verdicts",
        ),
    ],
)
def test_cli_one_line_and_exit_status_of_each_way_a_run_ends(tmp_path, monkeypatch, capsys, outcome, code, start):
    import driver.run

    def run(plan, resume=None):
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(driver.run, "run", run)
    plan = type("Plan", (), {"output": tmp_path, "cfg": config(tmp_path, steps=6)})()
    with pytest.raises(SystemExit) as excinfo:
        cli.execute(plan, cli.Decision("start"))
    assert excinfo.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(start), err


def test_stop_signals_first_asks_to_stop_second_aborts():
    stop = StopSignals()
    before = signal.getsignal(signal.SIGTERM)
    stop.install()
    try:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM"
        with pytest.raises(Aborted) as caught:
            os.kill(os.getpid(), signal.SIGINT)
        assert caught.value.signum == signal.SIGINT and stop.name == "SIGTERM"
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("kind", ["memory", "s3"])
def test_a_run_whose_checkpoints_are_in_storage_is_continued_from_there(tmp_path, caplog, request, kind):
    # object storage: no atomic rename, driver.json marks complete; s3: a real S3 server (moto)
    store = f"memory://{tmp_path.name}/store" if kind == "memory" else request.getfixturevalue("s3_bucket") + "/store"
    out = tmp_path / "run"
    cfg = config(out, storage=store, steps=6)
    out.mkdir()
    dump_config(cfg, out / "config.yaml")
    (out / "metrics.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    for step in (2, 4):
        make_checkpoint(store, step, cfg)
    assert not (out / "checkpoints").exists()  # nothing of the checkpoints is on the driver's disk

    decision = decide(out, config(out, storage=store, steps=10), "auto")
    assert decision.action == "continue" and decision.checkpoint is not None
    assert str(decision.checkpoint.path) == f"{store}/checkpoints/step-000004" and decision.checkpoint.step == 4

    (UPath(store) / "checkpoints" / "step-000004" / "driver.json").unlink()  # a write cut short
    with caplog.at_level(logging.WARNING, logger="driver"):
        decision = decide(out, config(out, storage=store, steps=10), "auto")
    assert decision.checkpoint is not None and decision.checkpoint.step == 2
    assert "step-000004: no driver.json" in caplog.text

    fresh = config(tmp_path / "new-run", storage=store, steps=10)  # a new run pointed at the same storage
    with pytest.raises(ResumeRefused, match=f"storage '{store}' already holds a run's checkpoints; choose another storage"):
        decide(tmp_path / "new-run", fresh, "never")
    empty = config(out, storage=f"{store}-elsewhere", steps=10)  # the run's storage is where it looks
    with pytest.raises(ResumeRefused, match="no complete checkpoint"):
        decide(out, empty, "auto")
