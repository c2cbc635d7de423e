"""Puts the pieces together: the predictor, the demo clips, the job queue and the HTTP server."""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import tempfile

from grace_jax.infra import cli
from grace_jax.infra.errors import UserError
from grace_jax.serve import app, demos
from grace_jax.serve.analysis import Analyzer
from grace_jax.serve.jobs import Jobs


def build(
    predictor,
    *,
    workdir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 200.0,
    max_seconds: float = 120.0,
    queue_size: int = 4,
    faces: str = "all",
    window_seconds: float = 1.0,
    stride_seconds: float = 0.0,
    work=None,
) -> app.Server:
    """A bound, not yet serving server around a loaded `predictor` (`work` replaces the analysis, for
    tests of the queue and the uploads without a model). Call `.serve_forever()`, then `.server_close()`."""
    scratch = tempfile.mkdtemp(prefix="grace-serve-demos-")
    try:
        clips = demos.find(workdir, scratch)
    except Exception:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    analyzer = work or Analyzer(predictor, faces=faces, window_seconds=window_seconds, stride_seconds=stride_seconds)
    jobs = Jobs(analyzer, capacity=queue_size + 1)
    settings = app.Settings(
        class_names=getattr(predictor, "class_names", []),
        max_upload_mb=max_upload_mb,
        max_seconds=max_seconds,
        faces=faces,
        window_seconds=window_seconds,
        demos=clips,
        jobs=jobs,
    )
    try:
        server = app.make_server(settings, host, port)
    except OSError as e:
        jobs.close()
        shutil.rmtree(settings.root, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"--port={port}: in use on {host}; choose another, or --port=0 for a free one") from None
        raise UserError(f"--host={host} --port={port}: cannot listen there ({e.strerror or e})") from None
    server.scratch = scratch
    return server


def close(server: app.Server) -> None:
    server.server_close()
    shutil.rmtree(server.scratch, ignore_errors=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    *,
    workdir: str | None,
    model: str | None,
    checkpoint: str = "best",
    faces: str = "all",
    face_crop: str | None = None,
    min_face_fraction: float = 0.25,
    **options,
) -> None:
    """Loads the model once, then serves until interrupted (Ctrl-C)."""
    from grace_jax.inference import Predictor

    if workdir and not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir}: no such folder; give a run folder written by grace_jax.main")
    if face_crop is None:
        face_crop = "none" if workdir and demos.synthfer_folder(workdir) else "auto"
        if face_crop == "none":
            faces = "largest"  # uncropped frames hold one "face": the whole frame
    # The call's settings given to the constructor too: a combination the Predictor refuses is one
    # error line at start, not a failure of every request.
    common = {"faces": faces, "face_crop": face_crop, "min_face_fraction": min_face_fraction}
    if model:
        predictor = Predictor(model=model, **common)
    else:
        predictor = Predictor(workdir, checkpoint=checkpoint, **common)
    server = build(predictor, workdir=workdir, faces=faces, **options)
    host = options.get("host", "127.0.0.1")
    if not is_loopback(host):
        cli.warn(
            f"listening on {host}, not only on this machine: anyone who reaches this address can upload "
            "videos to it (there is no login); put it behind a proxy with authentication if that matters."
        )
    print(
        f"grace_jax.serve: {len(predictor.class_names)} classes, face_crop={face_crop}, faces={faces}, "
        f"{len(server.settings.demos)} demo clips. Open {server.url}  (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopped.", flush=True)
    finally:
        close(server)
