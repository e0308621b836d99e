"""Installing the project installs its dependencies and none of its packages (README, "Installation").

The top-level packages (`driver`, `actors`, `learner`, ...) have generic names; in site-packages
they would collide with anything else of the same name. The project runs from its checkout instead.
Both install paths are built here from a copy of the checkout, offline (`--no-deps`,
`--no-build-isolation`: the setuptools of this Python, nothing from an index): a regular install
into a `--target` directory, and the editable wheel that `pip install -e .` would install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# every top-level package of the checkout (a folder with an __init__.py), and the six
PACKAGES = sorted(
    {p.parent.name for p in REPO.glob("*/__init__.py")} | {"driver", "actors", "learner", "rollout", "protocols", "deploy"}
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """pyproject.toml and the package folders, copied (a build writes build/ and *.egg-info in its source)."""
    pytest.importorskip(
        "setuptools",
        reason="building without isolation needs setuptools in this Python "
        "(pyproject: setuptools>=68); with isolation pip would fetch it",
    )
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    for name in PACKAGES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def test_pip_install_puts_nothing_but_the_metadata_into_site_packages(source, tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = sorted(p.name for p in site.iterdir())
    assert not set(installed) & set(PACKAGES), installed
    assert [name for name in installed if not name.endswith(".dist-info")] == [], installed
    (dist,) = installed
    assert dist.startswith("online_rlhf-")
    assert (site / dist / "top_level.txt").read_text().strip() == ""
    record = (site / dist / "RECORD").read_text().splitlines()
    assert all(line.startswith(f"{dist}/") for line in record), record


def test_editable_install_maps_no_package(source, tmp_path):
    """What `pip install -e .` installs: setuptools' import finder with an empty mapping and a .pth
    that only installs it (no directory of the checkout put on sys.path)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_editable({str(wheels)!r}))"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert not {name.split("/")[0] for name in names} & set(PACKAGES), names
        for name in names:
            text = zf.read(name).decode()
            if name.endswith(".pth"):
                assert text.startswith("import "), text  # a path line would put a directory on sys.path
            if "/" not in name and name.endswith(".py"):  # the finder
                assert "MAPPING: dict[str, str] = {}" in text, text[:1000]
                assert "NAMESPACES: dict[str, list[str]] = {}" in text, text[:1000]
