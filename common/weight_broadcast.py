"""Weights from learner rank 0 to the rollout workers by a collective broadcast, in buckets: gloo
between CPU processes, NCCL between GPUs (the same code; the backend and the device differ).

    group = WeightGroup(host, port, rank, world_size, "gloo", timeout_s=60)   # every member, at once
    send(group, state_dict, payload, bucket_bytes=64 << 20)                     # rank 0
    payload, weights = receive(group)                                           # every other member

What travels: one header (the caller's `payload` bytes, e.g. a WeightVersion with its sync probe,
and the bucket layout), then one broadcast per bucket: tensors of one dtype, flattened and
concatenated in the sender's order, at most `bucket_bytes` each (a larger tensor is a bucket of its
own). The receiver gets (name, tensor) pairs in the sender's order, views of its buckets.

The group is a process group of its own, met at a TCPStore on rank 0's `host:port`, not
torch.distributed's default group: the learner's DeepSpeed ranks use that one among themselves.
A member that dies or stalls makes the others' broadcast fail within `timeout_s`
(`torch.distributed.DistBackendError`, a RuntimeError), never hang.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Bucket:
    dtype: str  # e.g. "float32"
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def numel(self) -> int:
        return sum(_numel(s) for s in self.shapes)


def plan_buckets(state: Mapping[str, torch.Tensor], bucket_bytes: int) -> list[Bucket]:
    """Consecutive tensors of one dtype grouped up to `bucket_bytes` (state order kept)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    buckets: list[Bucket] = []
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    dtype, size = None, 0
    for name, tensor in state.items():
        kind = str(tensor.dtype).removeprefix("torch.")
        nbytes = tensor.numel() * tensor.element_size()
        if names and (kind != dtype or size + nbytes > bucket_bytes):
            buckets.append(Bucket(str(dtype), tuple(names), tuple(shapes)))
            names, shapes, size = [], [], 0
        names.append(name)
        shapes.append(tuple(tensor.shape))
        dtype, size = kind, size + nbytes
    if names:
        buckets.append(Bucket(str(dtype), tuple(names), tuple(shapes)))
    return buckets


class WeightGroup:
    """This process's membership of a broadcast group (rank 0 sends)."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float):
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
        timeout = timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        if backend == "gloo":
            self.pg: dist.ProcessGroup = dist.ProcessGroupGloo(self.store, rank, world_size, timeout)
            self.device = torch.device("cpu")
        else:
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(self.store, rank, world_size, options)
            self.device = torch.device("cuda", torch.cuda.current_device())

    def broadcast(self, tensor: torch.Tensor) -> None:
        """`tensor` from rank 0 into every member's `tensor`, in place (waited for)."""
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.pg.broadcast([tensor], options).wait()


def send(group: WeightGroup, state: Mapping[str, torch.Tensor], payload: bytes, bucket_bytes: int) -> int:
    """Rank 0: the header, then every bucket of `state`; returns the bytes broadcast."""
    buckets = plan_buckets(state, bucket_bytes)
    layout = json.dumps([[b.dtype, list(b.names), [list(s) for s in b.shapes]] for b in buckets]).encode()
    header = len(layout).to_bytes(8, "little") + layout + payload
    _broadcast_bytes(group, header)
    sent = len(header)
    for bucket in buckets:
        flat = torch.cat([state[name].detach().reshape(-1).to(group.device) for name in bucket.names])
        group.broadcast(flat)
        sent += flat.numel() * flat.element_size()
    return sent


def receive(group: WeightGroup) -> tuple[bytes, list[tuple[str, torch.Tensor]]]:
    """Every other member: (the sender's payload, [(name, tensor)] on the group's device)."""
    header = _broadcast_bytes(group, None)
    size = int.from_bytes(header[:8], "little")
    layout, payload = json.loads(header[8 : 8 + size]), header[8 + size :]
    weights: list[tuple[str, torch.Tensor]] = []
    for dtype, names, shapes in layout:
        bucket = Bucket(dtype, tuple(names), tuple(tuple(s) for s in shapes))
        flat = torch.empty(bucket.numel, dtype=getattr(torch, dtype), device=group.device)
        group.broadcast(flat)
        offset = 0
        for name, shape in zip(bucket.names, bucket.shapes, strict=True):
            count = _numel(shape)
            weights.append((name, flat[offset : offset + count].view(shape)))
            offset += count
    return payload, weights


def _broadcast_bytes(group: WeightGroup, data: bytes | None) -> bytes:
    """`data` from rank 0 to everyone (None on the others): its length, then its bytes."""
    length = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64, device=group.device)
    group.broadcast(length)
    buffer = (
        torch.frombuffer(bytearray(data), dtype=torch.uint8).to(group.device)
        if data is not None
        else torch.empty(int(length.item()), dtype=torch.uint8, device=group.device)
    )
    group.broadcast(buffer)
    return bytes(buffer.cpu().numpy().tobytes()) if data is None else data


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count
