"""Hub names without network: one clear line at once through the CLI; the hub cache still works."""

import concurrent.futures
import os
import socket
import subprocess
import sys
import time

import pytest

from grace_jax.infra import hub
from grace_jax.interop import hf_export
from grace_jax.models import clip as clip_lib
from grace_jax.models import clip_checkpoint
from grace_jax.text.tokenizer import Tokenizer

MODEL = "openai/clip-vit-base-patch16"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: nothing listens there


def _main(tmp_path, name: str, overrides: list[str], **env_changes) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, HF_HOME=str(tmp_path / f"hf_{name}"), PYTHONPATH=REPO)  # an empty hub cache
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grace_jax.main",
            "--config=configs/demo.py",
            f"--workdir={tmp_path / name}",
            *overrides,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, time.monotonic() - start


@pytest.mark.slow
def test_a_hub_name_without_network_fails_at_once_in_one_line(tmp_path):
    """Offline (HF_HUB_OFFLINE=1) and with the hub unreachable (HF_ENDPOINT on a closed local port,
    HF_HUB_OFFLINE unset): one error line naming the model and the ways out, within a few seconds of
    a run that fails the config check just before (a batch of 0; both pay for the same imports).
    Before: SynthFER generated, then 52 retry lines over minutes."""
    port = _closed_port()
    # The variant of those weights too: the demo's tiny variant with ViT-B/16 weights is refused first.
    init = [
        f"--config.model.clip.init={MODEL}",
        "--config.model.clip.tokenizer=",
        "--config.model.clip.variant=ViT-B/16",
    ]
    runs = {
        "offline": (init, {"HF_HUB_OFFLINE": "1"}),
        "no_network": (
            init,
            {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": f"http://127.0.0.1:{port}"},
        ),
        "baseline": (["--config.optim.batch_size=0"], {}),
    }
    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        futures = {k: pool.submit(_main, tmp_path, k, argv, **env) for k, (argv, env) in runs.items()}
        results = {k: f.result() for k, f in futures.items()}
    baseline = results.pop("baseline")
    assert baseline[0].returncode == 1 and "optim.batch_size=0" in baseline[0].stderr, baseline[0].stderr
    for name, (done, elapsed) in results.items():
        said = f"{name}: exit {done.returncode}, {elapsed:.1f} s\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        assert done.returncode == 1, said
        assert "Traceback" not in done.stderr and "Retrying" not in done.stderr, said
        errors = [line for line in done.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1 and errors[0].startswith("grace_jax.main: error: "), said
        line = errors[0]
        assert f"--config.model.clip.init={MODEL}:" in line, said
        assert f"hf download {MODEL}" in line and "snapshot_download(" in line, said
        assert "--config.model.clip.tokenizer=<folder>" in line, said
        # Measured on 2 loaded cores (load 12): 48 s against the baseline's 45 s; unloaded, the hub
        # check itself takes 0.5 s. The retrying version took minutes.
        assert elapsed < baseline[1] + 8, f"baseline {baseline[1]:.1f} s; {said}"
        assert not (tmp_path / name).exists(), said  # nothing was started: no SynthFER generated
    assert "HF_HUB_OFFLINE is set" in [line for line in results["offline"][0].stderr.splitlines() if "error" in line][0]
    assert f"http://127.0.0.1:{port} cannot be reached" in results["no_network"][0].stderr


def _cache_repo(cache, name: str):
    """The layout `hf download` leaves in the hub cache; returns the snapshot folder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + name.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture
def cached_clip(tmp_path, monkeypatch):
    """A tiny CLIP with its tokenizer under the hub name someone/tiny-clip, in a fresh hub cache."""
    import huggingface_hub.constants as constants
    from clip_fixtures import write_hf_clip, write_tokenizer_dir

    cache = tmp_path / "hub"
    snap = _cache_repo(cache, "someone/tiny-clip")
    write_hf_clip(str(snap), clip_lib.clip_config("tiny"))
    write_tokenizer_dir(str(snap))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return "someone/tiny-clip", snap


def test_a_cached_hub_name_loads_offline_and_without_network(cached_clip, monkeypatch):
    import huggingface_hub.constants as constants

    name, snap = cached_clip
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py
    model = clip_checkpoint.load_pretrained(name)
    assert model.config.vision.width == clip_lib.clip_config("tiny").vision.width
    assert Tokenizer.from_pretrained(name).vocab_size == Tokenizer.from_pretrained(str(snap)).vocab_size
    # Online mode, but the hub does not answer: the cache is used, with no retries.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    assert hub.snapshot(name, "model.clip.init", hub.CLIP_FILES) == str(snap)
    assert hub.snapshot(name, "model.clip.tokenizer", hub.TOKENIZER_FILES) == str(snap)
    assert time.monotonic() - start < 5
    # A cached repository without what this use needs is not taken from the cache.
    (snap / "model.safetensors").unlink()
    with pytest.raises(hub.HubError, match="cannot be reached"):
        hub.check(name, "model.clip.init", hub.CLIP_FILES)


def test_predict_model_hub_name_offline_names_the_flag_and_the_way_out():
    with pytest.raises(hf_export.ExportError) as e:
        hf_export.resolve_model("someone/not-there")
    text = str(e.value)
    assert text.startswith("--model=someone/not-there: ") and "HF_HUB_OFFLINE is set" in text
    assert "hf download someone/not-there" in text and "--model=<folder>" in text
    assert "clip.tokenizer" not in text  # that hint is for CLIP weights only


def test_hub_names_and_paths():
    assert hub.is_hub_name(MODEL) and hub.is_hub_name("someone/grace-dfew3")
    assert not hub.is_hub_name("/data/clip") and not hub.is_hub_name("runs/a/b")
    assert not hub.is_hub_name("builtin:tiny") and not hub.is_hub_name("clip.pt")


def test_the_fetch_commands_in_the_message_ask_for_the_needed_files(monkeypatch, tmp_path):
    """The `hf download` and python commands the error prints, run with huggingface_hub's download
    faked: both fetch configs, vocabularies and safetensors weights into the named folder."""
    import re
    import shlex

    import huggingface_hub
    import huggingface_hub.cli.download as hf_download
    from huggingface_hub.cli import hf

    with pytest.raises(hub.HubError) as e:
        hub.check(MODEL, "model.clip.init", hub.CLIP_FILES)
    commands = re.findall(r"`([^`]+)`", str(e.value))
    assert len(commands) == 2 and commands[0].startswith("hf download ")
    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return str(tmp_path)

    monkeypatch.setattr(hf_download, "snapshot_download", fake)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr(sys, "argv", shlex.split(commands[0]))
    with pytest.raises(SystemExit) as done:
        hf.main()
    assert done.value.code == 0
    python = shlex.split(commands[1])
    assert python[:2] == ["python", "-c"]
    exec(python[2], {})  # noqa: S102 -- the message's own snippet, against the fake download
    assert len(calls) == 2
    for args, kwargs in calls:
        assert (args[0] if args else kwargs["repo_id"]) == MODEL
        assert kwargs["allow_patterns"] == ["*.json", "*.txt", "*.safetensors"]
        assert kwargs["local_dir"] == "clip-vit-base-patch16"
