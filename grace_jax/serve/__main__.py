r"""A web page (and a JSON API) that classifies uploaded face videos with a trained run or an export.

  python -m grace_jax.serve --workdir=runs/demo                    # http://127.0.0.1:8000/
  python -m grace_jax.serve --model=your-name/grace-dfew3 --port=0 # a free port; the URL is printed
  curl --data-binary @clip.mp4 'http://127.0.0.1:8000/api/predict?name=clip.mp4'

See docs/web.md for the page, the API, the limits and a Hugging Face Spaces recipe.
"""

from __future__ import annotations

from absl import app, flags

from grace_jax.infra import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (config.json, checkpoints).")
_MODEL = flags.DEFINE_string(
    "model", None, "Instead of --workdir: a folder written by grace_jax.export, or its hub name (owner/name)."
)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "With --workdir: which checkpoint.")
_HOST = flags.DEFINE_string(
    "host", "127.0.0.1", "Address to listen on; 127.0.0.1 keeps the page on this machine, 0.0.0.0 opens it to all."
)
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one (the URL is printed).")
_MAX_UPLOAD_MB = flags.DEFINE_float("max_upload_mb", 200.0, "Largest upload accepted, in MB (10^6 bytes).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 120.0, "Longest video accepted, in seconds.")
_QUEUE = flags.DEFINE_integer(
    "queue", 4, "Videos waiting besides the one being analysed; more requests get HTTP 503 (server busy)."
)
_FACES = flags.DEFINE_enum("faces", "all", ["all", "largest"], "Classify every face track, or the largest only.")
_FACE_CROP = flags.DEFINE_enum(
    "face_crop",
    None,
    ["auto", "none"],
    "auto: find faces (BlazeFace) and crop to them; none: the frames as given. Default: none for runs "
    "trained on SynthFER (BlazeFace does not see its drawn faces), auto otherwise.",
)
_MIN_FACE_FRACTION = flags.DEFINE_float(
    "min_face_fraction", 0.25, "With face_crop auto: below this fraction of frames with a face, 'no face'."
)
_WINDOW_SECONDS = flags.DEFINE_float(
    "window_seconds", 1.0, "One prediction per window of this many seconds (the timeline's points); 0: one."
)
_STRIDE_SECONDS = flags.DEFINE_float(
    "stride_seconds", 0.0, "Seconds from one window's start to the next's; 0: the window's length."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])}: the server takes flags only.")
    if bool(_WORKDIR.value) == bool(_MODEL.value):
        raise app.UsageError("Give exactly one of --workdir (a run) and --model (an exported model).")
    if not 0 <= _PORT.value <= 65535:
        raise app.UsageError(f"--port={_PORT.value} must be between 0 and 65535.")
    if _MAX_UPLOAD_MB.value <= 0 or _MAX_SECONDS.value <= 0:
        raise app.UsageError("--max_upload_mb and --max_seconds must be > 0.")
    if _QUEUE.value < 0:
        raise app.UsageError(f"--queue={_QUEUE.value} must be >= 0.")
    if _WINDOW_SECONDS.value < 0 or _STRIDE_SECONDS.value < 0:
        raise app.UsageError("--window_seconds and --stride_seconds must be >= 0.")
    if not 0 <= _MIN_FACE_FRACTION.value <= 1:
        raise app.UsageError(f"--min_face_fraction={_MIN_FACE_FRACTION.value:g} must be between 0 and 1.")

    from grace_jax.serve import server

    server.serve(
        workdir=_WORKDIR.value,
        model=_MODEL.value,
        checkpoint=_CHECKPOINT.value,
        host=_HOST.value,
        port=_PORT.value,
        max_upload_mb=_MAX_UPLOAD_MB.value,
        max_seconds=_MAX_SECONDS.value,
        queue_size=_QUEUE.value,
        faces=_FACES.value,
        face_crop=_FACE_CROP.value,
        min_face_fraction=_MIN_FACE_FRACTION.value,
        window_seconds=_WINDOW_SECONDS.value,
        stride_seconds=_STRIDE_SECONDS.value,
    )


if __name__ == "__main__":
    cli.run(main)
