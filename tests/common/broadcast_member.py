"""One member of a weight-broadcast group, in its own process (tests/common/test_weight_broadcast.py).

    python -m tests.common.broadcast_member ROLE PORT RANK WORLD OUT [BACKEND]
ROLE: send (rank 0: the test state), receive (saves what arrived to OUT), quit (joins, then exits).
BACKEND: gloo (default) or nccl (member RANK on CUDA device RANK).
"""

from __future__ import annotations

import sys
import time

import torch

from common.weight_broadcast import WeightGroup, receive, send

PAYLOAD = b'{"version": 3}'


def sample_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 4, generator=generator),  # 48 B
        "a.bias": torch.randn(4, generator=generator),  # 16 B
        "embed": torch.randn(100, 8, generator=generator),  # 3200 B: more than a bucket, one of its own
        "half": torch.randn(5, generator=generator).to(torch.bfloat16),  # another dtype: another bucket
        "ids": torch.arange(6),  # int64
        "b.weight": torch.randn(2, 2, generator=generator),
    }


def main() -> None:
    role, port, rank, world, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    backend = sys.argv[6] if len(sys.argv) > 6 else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank)
    group = WeightGroup("127.0.0.1", port, rank, world, backend, timeout_s=20.0)
    if role == "send":
        started = time.monotonic()
        try:
            sent = send(group, sample_state(), PAYLOAD, bucket_bytes=256)
            torch.save({"sent": sent}, out)
        except RuntimeError as err:
            torch.save({"error": str(err).splitlines()[0], "seconds": time.monotonic() - started}, out)
    elif role == "receive":
        payload, weights = receive(group)
        cpu = {name: tensor.cpu() for name, tensor in weights}
        torch.save(
            {"payload": payload, "names": [n for n, _ in weights], "weights": cpu, "device": str(weights[0][1].device)}, out
        )
    else:  # joined, and gone
        sys.exit(0)


if __name__ == "__main__":
    main()
