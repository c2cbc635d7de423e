"""Test-wide setup: 8 fake CPU devices, set before anything imports jax."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole session, this process and every subprocess the
# tests start (they inherit the environment): many tests compile the same tiny train and eval steps,
# and on 2 cores compiling them again dominates the suite's time. Fresh per session, removed at its end.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _SESSION_XLA_CACHE = tempfile.mkdtemp(prefix="grace_jax_tests_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_XLA_CACHE
    # Every program, however quick to compile: a training subprocess then starts in 30 s instead of 37.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
else:
    _SESSION_XLA_CACHE = None
# Importing grace_jax appends --xla_cpu_experimental_ynn_fusion_type= (XLA:CPU's ynn fusion off:
# jaxlib 0.10.2 miscompiles it) unless the caller set that flag or GRACE_JAX_KEEP_YNN_FUSION=1;
# here, so that it precedes every test module's first jax computation (grace_jax/infra/cpu_numerics.py).
import grace_jax  # noqa: E402, F401

# Tests never touch the network: the Hugging Face hub is off.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    del session, exitstatus
    if _SESSION_XLA_CACHE:
        import shutil

        shutil.rmtree(_SESSION_XLA_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def synthfer_dir(tmp_path_factory):
    """A small SynthFER build (48 train / 20 test clips, 32 px), shared by the end-to-end tests."""
    from data_prep import job

    out = str(tmp_path_factory.mktemp("data") / "synthfer")
    job.build(
        job.BuildConfig(
            dataset="synth",
            out=out,
            synth_train=48,
            synth_test=20,
            frame_size=32,
            workers=1,
            synth_min_frames=6,
            synth_max_frames=10,
        )
    )
    return out


def tiny_run_config(data_dir: str, num_steps: int):
    """The demo config shrunk to seconds per step: 4 frames, 32 px, batch 8."""
    from grace_jax.configs import demo

    c = demo.get_config()
    c.data.dir = data_dir
    c.data.num_frames = c.model.num_frames = 4
    c.data.image_size = 32
    c.optim.batch_size = 8
    c.optim.num_train_steps = num_steps
    c.train.log_every_steps = 2
    c.train.eval_every_steps = 1000  # Only the final evaluation.
    c.train.ckpt_every_steps = 1000  # Only the final checkpoint.
    return c


@pytest.fixture(scope="session")
def tiny_run(synthfer_dir, tmp_path_factory):
    """(workdir, final summary) of a 6-step training run of the tiny model on SynthFER."""
    from grace_jax import train

    workdir = str(tmp_path_factory.mktemp("runs") / "tiny")
    return workdir, train.train_and_evaluate(tiny_run_config(synthfer_dir, 6), workdir)


@pytest.fixture(scope="session")  # a function, no state: module-scoped fixtures can use it too
def tiny_config():
    """`tiny_run_config` itself, for tests that build their own runs."""
    return tiny_run_config
