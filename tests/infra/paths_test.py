"""grace_jax.infra.paths: relative local paths become absolute once; URIs pass untouched."""

import os

from grace_jax.infra import paths


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.resolve("runs/demo") == os.path.join(str(tmp_path), "runs", "demo")
    assert paths.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")
    assert paths.resolve("/abs/dir") == "/abs/dir"


def test_uris_are_left_alone():
    for uri in ("gs://bucket/run", "s3://b/k", "gs://bucket"):
        assert paths.is_uri(uri)
        assert paths.resolve(uri) == uri
    assert not paths.is_uri("runs/gs:/x") and not paths.is_uri("/tmp/x")


def test_local_helpers_write_atomically_and_list(tmp_path):
    target = str(tmp_path / "out" / "a.json")
    paths.makedirs(paths.dirname(target))
    paths.write_text(target, "one")
    paths.write_text(target, "two")  # Replaces, through a temporary file that does not stay behind.
    assert paths.read_text(target) == "two" and paths.read_bytes(target) == b"two"
    assert paths.listdir(str(tmp_path / "out")) == ["a.json"]
    assert paths.exists(target) and paths.isfile(target) and paths.isdir(str(tmp_path / "out"))
    assert paths.join("gs://b/run", "x", "y.json") == "gs://b/run/x/y.json"
    assert paths.join(str(tmp_path), "x") == os.path.join(str(tmp_path), "x")
    assert paths.dirname("gs://b/run/x.json") == "gs://b/run"


def test_upload_tree_copies_files_marker_last(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in ("manifest.json", "a.array_record"):
        (src / name).write_text(name)
    (src / "subdir").mkdir()  # Not copied: the tree is one level, like a shard folder.
    assert paths.upload_tree(str(src), str(dst), last=["manifest.json"]) == ["a.array_record", "manifest.json"]
    assert sorted(os.listdir(dst)) == ["a.array_record", "manifest.json"]
