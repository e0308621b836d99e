"""torch.distributed / DeepSpeed set-up for one learner rank (no Ray here).

The driver tells each rank its rank, the world size and the rendezvous address (rank 0's node IP
and a free port); on CPU the backend is gloo, on GPUs NCCL. A single rank meets nobody: its group
uses an in-process store, and no rendezvous server listens (torch's TCPStore binds every interface).
With a loopback rendezvous address (a local cluster on 127.0.0.1) gloo and NCCL use the loopback
interface too (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME, unless set): NCCL otherwise opens its
bootstrap sockets on the network interface, one rank or not (seen on an H200 with torch 2.11).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

import torch

logger = logging.getLogger(__name__)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    """A TCP port that was free a moment ago on this host (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def environment_first(path: str, executable: str = sys.executable) -> str:
    """PATH with the directory of `executable` (this venv's bin/) first, when it holds `ninja`.

    DeepSpeed JIT-builds its CPU shared-memory op (torch.utils.cpp_extension runs `ninja` from
    PATH) into one cache directory shared by every process. The venv's ninja (1.13, a DeepSpeed
    dependency) and a system ninja (1.11) hash command lines differently, so each takes the other's
    build for a changed command and rebuilds it (1-3 minutes on 2 cores): a rank started from an
    activated venv (a Ray job) and one started without it rebuilt the op in turn. One ninja: this one."""
    bin_dir = os.path.dirname(executable)
    parts = [p for p in path.split(os.pathsep) if p]
    if not os.path.isfile(os.path.join(bin_dir, "ninja")) or parts[:1] == [bin_dir]:
        return path
    return os.pathsep.join([bin_dir, *(p for p in parts if p != bin_dir)])


def init_distributed(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """Join the learner group; a no-op when it is already initialised."""
    os.environ["PATH"] = environment_first(os.environ.get("PATH", ""))  # DeepSpeed's JIT build: the venv's ninja
    import deepspeed  # deferred: importing DeepSpeed costs seconds and is only needed on learner ranks

    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's engine asserts it is set
    if torch.distributed.is_initialized():
        return
    os.environ.update(
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK="0",  # Ray gives each rank its own device set, so the local index is always 0
    )
    if master_addr in LOOPBACK:  # every rank on this machine (a loopback-only local cluster): so are their sockets
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")  # NCCL's bootstrap and proxy listen even for one rank
    if world_size == 1:  # no peer to meet: an in-process store, so no TCPStore listens on every interface
        torch.distributed.init_process_group(backend(), store=torch.distributed.HashStore(), rank=0, world_size=1)
    deepspeed.init_distributed(dist_backend=backend(), auto_mpi_discovery=False)  # (adopts an initialised group)
    logger.info("learner rank %d/%d joined %s:%d (%s)", rank, world_size, master_addr, master_port, backend())


def device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of `values` over the learner ranks (identity with one rank)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device())
    torch.distributed.all_reduce(t)
    return t.tolist()
