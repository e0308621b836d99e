"""common/weight_broadcast.py: buckets by hand, and a real broadcast over gloo between processes
(the transport NCCL uses on GPUs, with the CPU backend)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.weight_broadcast import plan_buckets
from tests.common.broadcast_member import PAYLOAD, sample_state

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def members(roles: list[str], tmp_path: Path, backend: str = "gloo") -> list[tuple[subprocess.Popen, Path]]:
    port, env = free_port(), {**os.environ, "PYTHONPATH": str(REPO)}
    started = []
    for rank, role in enumerate(roles):
        out = tmp_path / f"rank{rank}.pt"
        command = [sys.executable, "-m", "tests.common.broadcast_member", role, str(port), str(rank), str(len(roles)), str(out)]
        command.append(backend)
        started.append((subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True), out))
    return started


def test_buckets_keep_the_order_split_by_dtype_and_size():
    buckets = plan_buckets(sample_state(), bucket_bytes=256)
    assert [(b.dtype, b.names) for b in buckets] == [
        ("float32", ("a.weight", "a.bias")),  # 64 B
        ("float32", ("embed",)),  # 3200 B > 256: a bucket of its own
        ("bfloat16", ("half",)),
        ("int64", ("ids",)),
        ("float32", ("b.weight",)),  # same dtype as earlier ones, but not consecutive
    ]
    assert [b.numel for b in buckets] == [16, 800, 5, 6, 4]
    assert len(plan_buckets(sample_state(), bucket_bytes=1 << 20)) == 4  # big buckets: only dtype changes split
    with pytest.raises(ValueError, match="bucket_bytes must be > 0"):
        plan_buckets(sample_state(), 0)


@pytest.mark.parametrize(
    "backend",
    [
        "gloo",
        pytest.param(
            "nccl",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(torch.cuda.device_count() < 3, reason="NCCL needs a GPU per member: 3 CUDA devices"),
            ],
        ),
    ],
)
def test_two_receivers_get_every_tensor_exactly_in_order_with_the_payload(tmp_path, backend):
    procs = members(["send", "receive", "receive"], tmp_path, backend)
    for proc, _ in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    state = sample_state()
    assert torch.load(procs[0][1])["sent"] > sum(t.numel() * t.element_size() for t in state.values())
    for _, out in procs[1:]:
        got = torch.load(out)
        assert got["payload"] == PAYLOAD and got["names"] == list(state)
        assert got["device"] == ("cpu" if backend == "gloo" else f"cuda:{procs.index((_, out))}")
        for name, tensor in state.items():
            assert got["weights"][name].dtype == tensor.dtype and torch.equal(got["weights"][name], tensor), name


def test_a_member_that_leaves_fails_the_send_within_the_timeout_not_a_hang(tmp_path):
    procs = members(["send", "receive", "quit"], tmp_path)
    started = time.monotonic()
    sender, receiver, quitter = procs
    assert quitter[0].wait(timeout=120) == 0
    assert sender[0].wait(timeout=120) == 0, sender[0].stderr.read()[-2000:]
    result = torch.load(sender[1])
    assert "error" in result and result["seconds"] < 25.0, result  # timeout_s 20
    receiver[0].kill()
    receiver[0].wait()
    assert time.monotonic() - started < 120
