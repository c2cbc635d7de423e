"""Damaged checkpoints and a cut metrics.jsonl in a gs:// workdir (the Cloud Storage emulator, as in
tests/infra/gcs_test.py): the damaged step is moved object by object into checkpoints/damaged/ in the
bucket and the older step restored; the metrics file's cut line goes to metrics.jsonl.damaged-1."""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gcs_emulator  # noqa: E402

pytestmark = pytest.mark.slow  # starts the emulator

BUCKET = "bucket"
ABSTRACT = {"w": jax.ShapeDtypeStruct((64, 256), jnp.float32)}


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator.GCSEmulator() as emulator, pytest.MonkeyPatch.context() as mp:
        emulator.create_bucket(BUCKET)
        for key, value in emulator.env({}).items():
            mp.setenv(key, value)
        import gcsfs  # after the variables: gcsfs reads some of them on import

        gcsfs.GCSFileSystem.clear_instance_cache()  # a cached client would keep its old endpoint
        yield emulator
        gcsfs.GCSFileSystem.clear_instance_cache()


def test_a_damaged_step_on_gcs_is_moved_aside_in_the_bucket(gcs, capsys):
    from grace_jax.run import checkpointing

    root = f"gs://{BUCKET}/run/checkpoints"
    ckpt = checkpointing.Checkpoints(root)
    for step in (2, 4):
        ckpt.save(step, {"w": jnp.full((64, 256), float(step))})
    ckpt.wait()
    step_4 = sorted(gcs.list_objects(BUCKET, "run/checkpoints/last/4/"))
    metadata = "run/checkpoints/last/4/state/_METADATA"
    assert metadata in step_4
    gcs.upload(BUCKET, metadata, gcs.read(BUCKET, metadata)[:20])  # a cut upload
    step, state = ckpt.restore(ABSTRACT)
    assert step == 2 and float(state["w"][0, 0]) == 2.0
    err = capsys.readouterr().err
    assert f"{root}/last/4 cannot be read (" in err and f"moved to {root}/damaged/last-4 (nothing deleted)" in err
    assert gcs.list_objects(BUCKET, "run/checkpoints/last/4/") == []
    moved = sorted(gcs.list_objects(BUCKET, "run/checkpoints/damaged/last-4/"))
    assert moved == [name.replace("/last/4/", "/damaged/last-4/") for name in step_4]
    assert ckpt.last.all_steps() == [2]
    ckpt.close()


def test_a_cut_metrics_line_on_gcs_is_set_aside(gcs, capsys):
    from grace_jax.run import metric_writers

    workdir = f"gs://{BUCKET}/metrics_run"
    whole = [{"step": s, "split": "train", "loss": 1.0} for s in (2, 4)]
    gcs.upload(BUCKET, "metrics_run/metrics.jsonl", ("".join(json.dumps(r) + "\n" for r in whole) + '{"st').encode())
    writer = metric_writers.MetricWriter(workdir, resume_step=4)
    writer.write(6, "train", {"loss": 0.5})
    writer.close()
    assert f"{workdir}/metrics.jsonl: 1 damaged line" in capsys.readouterr().err
    assert gcs.read(BUCKET, "metrics_run/metrics.jsonl.damaged-1") == b'{"st\n'
    assert metric_writers.read_metrics(workdir) == whole + [{"step": 6, "split": "train", "loss": 0.5}]
