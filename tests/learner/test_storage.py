"""learner/storage.py: how a rank's files reach the run's storage (a path, a URI, or shipped back)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from learner import storage


def write_tree(directory: str) -> None:
    root = Path(directory)
    (root / "learner").mkdir(parents=True, exist_ok=True)
    (root / "learner" / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    (root / "latest").write_text("learner")


def test_is_uri_tells_schemes_from_paths():
    assert storage.is_uri("file:///shared/run") and storage.is_uri("s3://bucket/run") and storage.is_uri("memory://x")
    assert not storage.is_uri("/shared/run") and not storage.is_uri("runs/x")


def test_pack_and_unpack_round_trip(tmp_path):
    write_tree(str(tmp_path / "a"))
    files = storage.pack(tmp_path / "a")
    assert files == {"latest": b"learner", "learner/mp_rank_00_model_states.pt": b"weights"}
    storage.unpack(files, tmp_path / "b")
    assert storage.pack(tmp_path / "b") == files


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "learner/../../x"])
def test_unpack_refuses_paths_leaving_the_directory(tmp_path, name):
    with pytest.raises(ValueError, match="outside"):
        storage.unpack({name: b"x"}, tmp_path / "d")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


def test_save_to_a_path_writes_in_place_and_returns_nothing(tmp_path):
    target = tmp_path / "ckpt"
    assert storage.save_staged(str(target), write_tree) is None
    assert (target / "learner" / "mp_rank_00_model_states.pt").read_bytes() == b"weights"


def test_save_with_no_target_returns_the_files_and_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the node-local staging directory goes here
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    files = storage.save_staged(None, write_tree)
    assert files == {"latest": b"learner", "learner/mp_rank_00_model_states.pt": b"weights"}
    assert list(tmp_path.iterdir()) == []  # the staging directory is removed


@pytest.mark.parametrize("scheme", ["file", "memory", "s3"])
def test_save_to_a_uri_uploads_and_load_downloads(tmp_path, request, scheme):
    uri = {
        "file": lambda: f"file://{tmp_path}/store/step-000002",
        "memory": lambda: "memory://store/step-000002",
        "s3": lambda: request.getfixturevalue("s3_bucket") + "/store/step-000002",  # a real S3 server (moto)
    }[scheme]()
    assert storage.save_staged(uri, write_tree) is None
    fs, root = fsspec.core.url_to_fs(uri)
    assert fs.cat_file(f"{root}/learner/mp_rank_00_model_states.pt") == b"weights"
    seen = storage.load_staged(uri, None, lambda d: storage.pack(Path(d)))
    assert seen == {"latest": b"learner", "learner/mp_rank_00_model_states.pt": b"weights"}


def test_load_from_shipped_files_and_in_place(tmp_path):
    files = {"latest": b"learner", "learner/x.pt": b"1"}
    assert storage.load_staged("/nowhere/on/this/node", files, lambda d: storage.pack(Path(d))) == files
    storage.unpack(files, tmp_path / "here")
    assert storage.load_staged(str(tmp_path / "here"), None, lambda d: d) == str(tmp_path / "here")


def test_downloading_an_empty_uri_says_so():
    with pytest.raises(FileNotFoundError, match="no files under memory://nothing-here"):
        storage.download("memory://nothing-here", Path("/tmp/unused"))


def test_a_writable_storage_passes_the_check_and_keeps_nothing_of_it(tmp_path):
    storage.check_writable(f"file://{tmp_path}/store")
    storage.check_writable(str(tmp_path / "plain"))
    assert list((tmp_path / "store").iterdir()) == [] and list((tmp_path / "plain").iterdir()) == []


def test_an_unwritable_storage_is_one_line_naming_it(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ValueError, match=r"storage '.*file/sub' cannot be written \((FileExistsError|NotADirectoryError)"):
        storage.check_writable(str(tmp_path / "file" / "sub"))
    with pytest.raises(ValueError, match="storage 'nosuch://x': .*nosuch"):
        storage.check_writable("nosuch://x")
