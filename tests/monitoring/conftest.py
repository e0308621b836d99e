"""One `ray start --head` cluster (dashboard, Prometheus endpoint, its own temp dir) for the
monitoring tests: the actor repr through Ray's state API, and Prometheus scraping run metrics."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.ray_head import start_head, stop_head


@pytest.fixture(scope="session")
def monitored_head(tmp_path_factory):
    # Ray's socket paths live under the temp dir and must stay short: not under pytest's tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="rlhf-mon-", dir="/tmp"))
    proc, head = start_head(tmp_path_factory.mktemp("monitored-head") / "head.log", temp_dir=temp_dir)
    yield head
    stop_head(proc, head.gcs_port)
    shutil.rmtree(temp_dir, ignore_errors=True)
