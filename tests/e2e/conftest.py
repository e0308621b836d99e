from __future__ import annotations

import pytest

from tests.e2e.ray_head import start_head, stop_head


@pytest.fixture
def head_node(tmp_path):
    proc, head = start_head(tmp_path / "head.log")
    yield head
    stop_head(proc, head.gcs_port)
