"""gs:// workdirs and data.dir against a local Cloud Storage emulator (fake-gcs-server, test extra).

The end-to-end part runs the real commands as subprocesses, each with every client pointed at the
emulator (`gcs_emulator.GCSEmulator.env`) and a timeout, from an empty working directory: the tiny
config trains on shards in the bucket with --workdir=gs://bucket/run, is restarted and resumes, then
`grace_jax.predict` and `grace_jax.folds` read the run back. Every output must be in the bucket and
nothing on local disk. The path-layer part runs in this process with the same variables set.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
import gcs_emulator  # noqa: E402

BUCKET = "bucket"


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator.GCSEmulator() as emulator:
        emulator.create_bucket(BUCKET)
        yield emulator


@pytest.fixture(scope="module")
def gcs_env(gcs):
    """This process's environment pointed at the emulator, for the in-process tests."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in gcs.env({}).items():
            mp.setenv(key, value)
        import gcsfs  # After the variables: gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT on import.

        gcsfs.GCSFileSystem.clear_instance_cache()  # A cached client would keep its old endpoint.
        yield gcs
        gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def gcs_data(gcs, synthfer_dir):
    """The session's SynthFER shards uploaded to gs://bucket/data (over the emulator's HTTP API)."""
    gcs.upload_dir(synthfer_dir, BUCKET, "data")
    return f"gs://{BUCKET}/data"


def _no_gs_folder(root):
    for dirpath, dirnames, _ in os.walk(root):
        assert not any(d.startswith("gs:") for d in dirnames), f"local 'gs:' folder under {dirpath}"


# ------------------------------------------------------------------------------ the path layer
@pytest.mark.slow
def test_path_layer_reads_writes_lists_on_gcs(gcs_env):
    from grace_jax.infra import paths

    root = f"gs://{BUCKET}/layer"
    paths.makedirs(paths.join(root, "sub"))  # No folders on GCS: nothing to do, no error.
    paths.write_text(paths.join(root, "a.json"), '{"x": 1}')
    paths.write_bytes(paths.join(root, "sub", "b.bin"), b"\x00\x01")
    assert paths.exists(paths.join(root, "a.json")) and paths.isfile(paths.join(root, "a.json"))
    assert paths.isdir(root) and paths.isdir(paths.join(root, "sub"))
    assert not paths.exists(paths.join(root, "missing.json"))
    assert json.loads(paths.read_text(paths.join(root, "a.json"))) == {"x": 1}
    assert paths.read_bytes(paths.join(root, "sub", "b.bin")) == b"\x00\x01"
    assert paths.listdir(root) == ["a.json", "sub"]
    paths.write_text(paths.join(root, "a.json"), "second")  # Overwrite is whole-object.
    assert gcs_env.read(BUCKET, "layer/a.json") == b"second"
    with pytest.raises(ValueError, match="append mode"):
        paths.open(paths.join(root, "a.json"), "a")
    assert paths.dirname(paths.join(root, "sub", "b.bin")) == f"{root}/sub"
    with pytest.raises(FileNotFoundError, match="gs://nobucket/run/config.json: cannot write it: no bucket 'nobucket'"):
        paths.write_text("gs://nobucket/run/config.json", "{}")


def test_upload_tree_puts_the_marker_last(gcs_env, tmp_path):
    from grace_jax.infra import paths

    for name in ("manifest.json", "a.array_record", "b.tsv"):
        (tmp_path / name).write_text(name)
    names = paths.upload_tree(str(tmp_path), f"gs://{BUCKET}/tree", last=["manifest.json"])
    assert names == ["a.array_record", "b.tsv", "manifest.json"]
    assert gcs_env.list_objects(BUCKET, "tree/") == [f"tree/{n}" for n in names]
    assert gcs_env.read(BUCKET, "tree/manifest.json") == b"manifest.json"


def test_metric_writer_keeps_earlier_runs_records_on_gcs(gcs_env):
    # fsspec's append mode overwrites on GCS: a second writer (a resumed run) must keep what the
    # first wrote, and drop what lies past the step it resumes from.
    from grace_jax.run import metric_writers

    workdir = f"gs://{BUCKET}/metrics_run"
    first = metric_writers.MetricWriter(workdir)
    for step in (2, 4, 6):
        first.write(step, "train", {"loss": float(step)})
    first.close()
    second = metric_writers.MetricWriter(workdir, resume_step=4)  # Checkpoint at 4, crash after 6.
    second.write(6, "train", {"loss": 0.5})
    second.write(6, "eval", {"uar": 0.25})
    second.close()
    records = metric_writers.read_metrics(workdir)
    assert [(r["step"], r["split"], r.get("loss", r.get("uar"))) for r in records] == [
        (2, "train", 2.0),
        (4, "train", 4.0),
        (6, "train", 0.5),
        (6, "eval", 0.25),
    ]
    events = gcs_env.list_objects(BUCKET, "metrics_run/tensorboard/")
    assert len(events) == 2 and all("events.out.tfevents" in e for e in events), events  # One per writer.


def test_plots_and_folds_on_gcs(gcs_env):
    from grace_jax import folds
    from grace_jax.run import plots

    png = plots.save_confusion_matrix(f"gs://{BUCKET}/plots/cm.png", np.eye(3) * 4, ["a", "b", "c"])
    assert gcs_env.read(BUCKET, "plots/cm.png")[:8] == b"\x89PNG\r\n\x1a\n" and png.startswith("gs://")
    for i, uar in enumerate((0.5, 0.7)):
        gcs_env.upload(
            BUCKET,
            f"folds/f{i}/final_metrics.json",
            json.dumps({"last": {"uar": uar, "war": uar}, "best": {"uar": uar, "war": uar}}).encode(),
        )
    summary = folds.summarize_folds([f"gs://{BUCKET}/folds/f0", f"gs://{BUCKET}/folds/f1"])
    assert summary["uar_mean"] == pytest.approx(0.6)
    with pytest.raises(FileNotFoundError, match="gs://bucket/folds/f9/final_metrics.json"):
        folds.summarize_folds([f"gs://{BUCKET}/folds/f9"])


def test_shards_are_listed_and_read_from_gcs(gcs_env, gcs_data, synthfer_dir):
    from grace_jax.data import input_pipeline

    manifest = input_pipeline.read_manifest(gcs_data)
    shards = input_pipeline.shard_paths(gcs_data, "test")
    assert all(isinstance(p, str) and p.startswith(f"{gcs_data}/test-") for p in shards)
    remote = input_pipeline.IndexedSource(input_pipeline.record_source(gcs_data, "test"))
    local = input_pipeline.IndexedSource(input_pipeline.record_source(synthfer_dir, "test"))
    assert len(remote) == manifest["splits"]["test"]["num_clips"] == len(local)
    for i in (0, len(local) - 1):  # Random access straight from the bucket, byte-identical.
        assert remote[i]["data"] == local[i]["data"]
    assert len(input_pipeline.read_clip_table(gcs_data, "test")) == len(local)
    with pytest.raises(FileNotFoundError, match="gs://bucket/nowhere/manifest.json not found"):
        input_pipeline.read_manifest(f"gs://{BUCKET}/nowhere")
    with pytest.raises(ValueError, match="local folder or gs://"):
        input_pipeline.read_manifest("s3://bucket/data")


def test_synthfer_for_a_gcs_workdir_is_built_locally_and_uploaded(gcs_env, tiny_config, tmp_path, monkeypatch):
    import tempfile

    from grace_jax import train
    from grace_jax.data import input_pipeline

    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    config = tiny_config("", 1)
    config.data.synth_train_clips, config.data.synth_test_clips = 8, 4
    workdir = f"gs://{BUCKET}/synth_run"
    data_dir = train._prepare_data(config, workdir)
    assert data_dir == f"{workdir}/synthfer"
    assert input_pipeline.read_manifest(data_dir)["splits"]["train"]["num_clips"] == 8
    assert len(input_pipeline.shard_paths(data_dir, "train")) >= 1
    assert os.listdir(tmp_path / "cwd") == []
    # Built in a temporary folder, removed after the upload (pymp-*: multiprocessing's, removed at exit).
    assert [n for n in os.listdir(tmp_path / "tmp") if not n.startswith("pymp-")] == []


def test_workdir_lock_on_gcs_is_created_only_if_absent(gcs_env, capsys):
    import subprocess as sp

    from grace_jax.infra import errors
    from grace_jax.run import workdir_lock

    workdir = f"gs://{BUCKET}/locked"
    with workdir_lock.acquire(workdir):
        assert json.loads(gcs_env.read(BUCKET, "locked/lock.json"))["pid"] == os.getpid()
        with pytest.raises(
            workdir_lock.LockHeldError, match=f"is in use by another trainer \\(pid {os.getpid()} on host"
        ):
            workdir_lock.acquire(workdir)
    assert "locked/lock.json" not in gcs_env.list_objects(BUCKET, "locked/")  # released
    # Left by a trainer of this host that no longer runs: taken over.
    child = sp.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gcs_env.upload(BUCKET, "locked/lock.json", json.dumps(dict(workdir_lock._this_process(), pid=child.pid)).encode())  # noqa: SLF001
    workdir_lock.acquire(workdir).release()
    assert (
        f"taking over {workdir}/lock.json: its trainer (pid {child.pid} on this host) no longer runs"
        in capsys.readouterr().err
    )
    with pytest.raises(errors.NotFoundError, match="no bucket 'nobucket'"):
        workdir_lock.acquire("gs://nobucket/run")


# ------------------------------------------------------------------------------ end to end
def _write_config(tmp_path) -> str:
    path = tmp_path / "tiny_gcs_config.py"
    path.write_text(
        "import os\n"
        "import sys\n\n"
        "_xla_flags = os.environ.get('XLA_FLAGS', '')\n"
        f"sys.path.insert(0, {TESTS!r})\n"
        "from conftest import tiny_run_config  # noqa: E402\n\n"
        "os.environ['XLA_FLAGS'] = _xla_flags  # One CPU device: conftest asks for 8, this test is about I/O.\n\n\n"
        "def get_config(arg):\n"
        "    steps, data_dir = arg.split(',', 1)\n"
        "    return tiny_run_config(data_dir, int(steps))\n"
    )
    return str(path)


def _run(args, env, cwd, timeout):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    print(f"{' '.join(args[:2])}: {time.perf_counter() - start:.0f} s")  # Shown with pytest -s / -rP.
    assert result.returncode == 0, (
        f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def gcs_first_run(gcs, gcs_data, tmp_path_factory):
    """Trains the tiny config 2 steps into gs://bucket/run; returns its stdout and what the bucket then held."""
    root = tmp_path_factory.mktemp("gcs_e2e")
    cwd = root / "cwd"  # Empty: anything written locally by mistake (a "gs:" folder) shows up here.
    cwd.mkdir()
    env = gcs.env()
    env.update(
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        JAX_PLATFORMS="cpu",
        # One CPU device, and XLA's quick compile: a third less CPU for the same run (this test is
        # about files, and the few steps it runs are not worth optimizing).
        XLA_FLAGS="--xla_backend_optimization_level=0",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        # The restart compiles the same steps (and predict the same initializers): read them back
        # from disk instead of compiling again (a 2-step run: ~3x less CPU warm than cold).
        JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    run = {"root": root, "cwd": cwd, "env": env, "workdir": f"gs://{BUCKET}/run", "config": _write_config(root)}
    run["out"] = _train(run, 2, gcs_data)
    run["objects"] = gcs.list_objects(BUCKET, "run/")
    run["metrics"] = gcs.read(BUCKET, "run/metrics.jsonl").decode()
    return run


@pytest.fixture(scope="module")
def gcs_run(gcs_first_run, gcs_data):
    """gcs_first_run restarted with the same command and 4 steps: it resumes from the bucket."""
    return dict(gcs_first_run, first_out=gcs_first_run["out"], out=_train(gcs_first_run, 4, gcs_data))


def _train(run, steps, data_dir):
    return _run(
        ["-m", "grace_jax.main", f"--config={run['config']}:{steps},{data_dir}", f"--workdir={run['workdir']}"],
        run["env"],
        str(run["cwd"]),
        timeout=900,
    )


@pytest.mark.slow
def test_gcs_first_run_wrote_its_outputs_to_the_bucket(gcs_first_run):
    assert "Resumed from" not in gcs_first_run["out"] and "step 2/2" in gcs_first_run["out"]
    objects = gcs_first_run["objects"]
    for name in (
        "config.json",
        "classes.json",
        "metrics.jsonl",
        "final_metrics.json",
        "confusion_matrix.png",
        "learning_curves.png",
    ):
        assert f"run/{name}" in objects, name
    assert any(o.startswith("run/checkpoints/last/2/") for o in objects)
    records = [json.loads(line) for line in gcs_first_run["metrics"].splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(2, "train"), (2, "eval")]
    assert os.listdir(gcs_first_run["cwd"]) == []


@pytest.mark.slow
def test_gcs_run_resumes_and_keeps_every_record(gcs, gcs_run):
    second = gcs_run["out"]
    assert "Resumed from gs://bucket/run/checkpoints at step 2." in second
    assert "step 2/4" not in second and "step 4/4" in second  # Continued, not restarted.
    # No append on GCS: the first run's records must have survived the second run's writes.
    records = [json.loads(line) for line in gcs.read(BUCKET, "run/metrics.jsonl").decode().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(2, "train"), (2, "eval"), (4, "train"), (4, "eval")]
    objects = gcs.list_objects(BUCKET, "run/")
    steps = {o.split("/")[3] for o in objects if o.startswith("run/checkpoints/last/")}
    assert steps == {"2", "4"}, steps
    final = json.loads(gcs.read(BUCKET, "run/final_metrics.json"))
    assert final["last"]["step"] == 4 and final["last"]["num_examples"] == 20
    assert len([o for o in objects if o.startswith("run/tensorboard/events.out.tfevents")]) == 2


@pytest.fixture(scope="module")
def gcs_predicted(gcs_run):
    """gcs_run, then `grace_jax.predict` on a local frame folder and `grace_jax.folds`, both from the bucket."""
    from PIL import Image

    clip = gcs_run["root"] / "inputs" / "clip_0001"  # Inputs are local; outputs go to the bucket.
    clip.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 30 * i, np.uint8)).save(clip / f"{i + 1:05d}.jpg")
    env, cwd, workdir = gcs_run["env"], str(gcs_run["cwd"]), gcs_run["workdir"]
    predict_out = _run(
        ["-m", "grace_jax.predict", f"--workdir={workdir}", "--face_crop=none", str(clip)], env, cwd, timeout=600
    )
    folds_out = _run(["-m", "grace_jax.folds", workdir, workdir], env, cwd, timeout=300)
    return dict(gcs_run, predict_out=predict_out, folds_out=folds_out)


@pytest.mark.slow
def test_gcs_run_predict_and_folds_read_from_the_bucket(gcs, gcs_predicted):
    assert "Wrote gs://bucket/run/predictions/predictions.json" in gcs_predicted["predict_out"]
    predictions = json.loads(gcs.read(BUCKET, "run/predictions/predictions.json"))
    assert not predictions["errors"] and len(predictions["results"]) == 1
    assert predictions["results"][0]["picture"] == "gs://bucket/run/predictions/clip_0001.png"
    assert gcs.read(BUCKET, "run/predictions/clip_0001.png")[:4] == b"\x89PNG"
    assert gcs.read(BUCKET, "run/predictions/predictions.csv").startswith(b"input,prediction,happiness")
    out = gcs_predicted["folds_out"]
    assert "gs://bucket/run: best_uar UAR" in out and "(SynthFER, generated)" in out
    assert "2 folds, 40 test clips" in out  # the same run twice: 20 test clips each


@pytest.mark.slow
def test_gcs_run_wrote_everything_to_the_bucket_and_nothing_locally(gcs, gcs_predicted):
    objects = set(gcs.list_objects(BUCKET, "run/"))
    for name in (
        "config.json",
        "classes.json",
        "metrics.jsonl",
        "confusion_matrix.png",
        "learning_curves.png",
        "final_metrics.json",
        "predictions/predictions.json",
        "predictions/predictions.csv",
        "predictions/clip_0001.png",
    ):
        assert f"run/{name}" in objects, name
    for prefix in (
        "run/tensorboard/events.out.tfevents",
        "run/checkpoints/last/4/",
        "run/checkpoints/best/",
        "run/checkpoints/last/4/data/",
    ):  # The grain iterator state too.
        assert any(o.startswith(prefix) for o in objects), prefix
    assert not any(".tmp" in o for o in objects), [o for o in objects if ".tmp" in o]
    assert "run/lock.json" not in objects  # each trainer released the workdir's lock
    root = gcs_predicted["root"]
    assert os.listdir(gcs_predicted["cwd"]) == []  # The commands' working directory stayed empty.
    _no_gs_folder(root)
    assert not os.path.exists(os.path.join(REPO, "gs:"))
    assert sorted(os.listdir(root)) == ["cwd", "inputs", "jax_cache", "tiny_gcs_config.py"]
    assert sorted(os.listdir(root / "inputs")) == ["clip_0001"]
