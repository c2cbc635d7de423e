"""grace_jax.paths: relative local paths become absolute once; URIs pass untouched."""

import os

from grace_jax import paths


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
