"""Where the package reads and writes: local paths and URIs such as gs://bucket/run.

Every file grace_jax reads or writes (the workdir, data.dir, predict's outputs, folds' inputs) goes
through these helpers, so one string works on the local disk and on Cloud Storage alike:

- Local paths are made absolute once, when a command starts (`resolve`), because orbax refuses
  relative checkpoint directories (its first save fails with "Checkpoint path should be absolute") and
  because a relative path would otherwise mean different places for code that changes directory.
- URIs (`gs://bucket/run`) pass unchanged and are read and written with etils' `epath`, which sends
  gs:// to fsspec's gcsfs (no TensorFlow needed). Local paths use plain `os` calls.

Semantics that differ between the two, and how the helpers make them the same:

- `write_text`/`write_bytes` are atomic: locally through a temporary file renamed over the target;
  on Cloud Storage an object only becomes visible once its upload has finished, so the object is
  written directly (GCS has no rename, and gcsfs's rename is a copy plus a delete).
- Cloud Storage has no folders: `makedirs` is a no-op there (it would otherwise create missing
  *buckets*); a missing bucket is reported by the first write.
- There is no append on Cloud Storage (fsspec's mode "a" silently overwrites the object): writers of
  growing files keep the content and rewrite the object (see `metric_writers.MetricWriter`).
"""

from __future__ import annotations

import builtins
import os
import posixpath
import re
import shutil
from collections.abc import Iterable

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """True for `scheme://...` paths (gs://, s3://, ...), which are not on the local disk."""
    return bool(_URI.match(str(path)))


def is_gcs(path: str) -> bool:
    return str(path).startswith("gs://")


def resolve(path: str) -> str:
    """An absolute local path (`~` expanded), or the URI itself."""
    if not path or is_uri(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    """`os.path.join` for local paths; `/`-joined for URIs (`join("gs://b/run", "x") == "gs://b/run/x"`)."""
    base = str(base)
    if is_uri(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def dirname(path: str) -> str:
    """The folder holding `path` (absolute for local paths)."""
    path = str(path)
    if is_uri(path):
        return posixpath.dirname(path.rstrip("/"))
    return os.path.dirname(os.path.abspath(path))


def _epath(path: str):
    from etils import epath  # Imported on first use: local-only runs never need it.

    from grace_jax.infra import errors

    try:
        return epath.Path(path)
    except Exception as e:  # e.g. "Please install gcsfs", or an unknown scheme.
        raise errors.ConfigError(f"{path}: cannot open this URI ({type(e).__name__}: {e})") from e


def exists(path: str) -> bool:
    return _epath(path).exists() if is_uri(path) else os.path.exists(path)


def isfile(path: str) -> bool:
    return _epath(path).is_file() if is_uri(path) else os.path.isfile(path)


def isdir(path: str) -> bool:
    return _epath(path).is_dir() if is_uri(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """Creates a local folder and its parents; nothing to do on Cloud Storage (no folders there)."""
    if is_gcs(path):
        return
    if is_uri(path):
        _epath(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Names (not paths) of the entries directly inside `path`, sorted."""
    if is_uri(path):
        return sorted(p.name for p in _epath(path).iterdir())
    return sorted(os.listdir(path))


def open(path: str, mode: str = "r", **kwargs):  # noqa: A001 - mirrors builtins.open
    """A file object for a local path or a URI. Mode "a" is refused on Cloud Storage (it overwrites)."""
    if not is_uri(path):
        return builtins.open(path, mode, **kwargs)
    if "a" in mode:
        raise ValueError(f"{path}: append mode is not supported on object storage (it overwrites).")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    return _epath(path).open(mode, **kwargs)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    with open(path, "r", encoding="utf-8") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes the whole file at once; readers never see a half-written one."""
    if is_uri(path):
        try:
            with open(path, "wb") as f:
                f.write(data)
        except FileNotFoundError as e:  # gcsfs names only the upload URL
            bucket = path.split("://", 1)[1].split("/", 1)[0]
            from grace_jax.infra import errors

            raise errors.NotFoundError(f"{path}: cannot write it: no bucket {bucket!r} ({e})") from e
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with builtins.open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def upload(local_path: str, dst: str) -> None:
    """Copies one local file to `dst` (a local path or a URI), streaming."""
    if not is_uri(dst):
        shutil.copyfile(local_path, dst)
        return
    with builtins.open(local_path, "rb") as src, open(dst, "wb") as out:
        shutil.copyfileobj(src, out, 16 << 20)


def upload_tree(local_dir: str, dst: str, *, last: Iterable[str] = ()) -> list[str]:
    """Copies the files of a local folder (not recursive) into `dst`; the names in `last` go last,
    so that a reader who waits for them (a manifest) sees a complete folder. Returns the names."""
    names = sorted(n for n in os.listdir(local_dir) if os.path.isfile(os.path.join(local_dir, n)))
    last = [n for n in last if n in names]
    makedirs(dst)
    for name in [n for n in names if n not in last] + last:
        upload(os.path.join(local_dir, name), join(dst, name))
    return names
