"""The console of a command holds its own lines: no third-party INFO logs unless --verbosity asks for
them, no TPU probing where no accelerator is installed, no orbax handler-override warning."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_test import _args, _env

from grace_jax.infra import console

REPO = Path(__file__).resolve().parents[2]
# absl's format: "I1202 13:40:00.706254 140068798851968 checkpoint_manager.py:2074] ..."
ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([^:\]]+):\d+\] ")


def _own_file_names() -> set[str]:
    return {p.name for d in console.own_directories() for p in Path(d).rglob("*.py")}


def _third_party_info(output: str) -> list[str]:
    own = _own_file_names()
    return [
        line
        for line in output.splitlines()
        if (m := ABSL_LINE.match(line)) and m.group(1) == "I" and m.group(2) not in own
    ]


# ------------------------------------------------------------------------------------ in process
def _record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_filter_passes_own_info_and_everyone_s_warnings():
    own = console.own_directories()
    assert any(d.rstrip(os.sep).endswith("grace_jax") for d in own)
    assert any(d.rstrip(os.sep).endswith("data_prep") for d in own)
    keep = console.OwnInfoOnly(own)
    import orbax.checkpoint

    theirs = orbax.checkpoint.__file__
    ours = console.__file__
    assert keep.filter(_record(ours, logging.INFO))
    assert not keep.filter(_record(theirs, logging.INFO))
    assert not keep.filter(_record(theirs, logging.DEBUG))
    assert keep.filter(_record(theirs, logging.WARNING))
    assert keep.filter(_record(theirs, logging.ERROR))
    # A folder whose name merely starts like ours is not ours.
    assert not keep.filter(_record(os.path.join(own[0].rstrip(os.sep) + "_extra", "x.py"), logging.INFO))


def test_prefer_cpu_only_without_accelerator_and_without_a_choice(monkeypatch):
    monkeypatch.setattr(console, "accelerator_installed", lambda: False)
    environ = {}
    assert console.prefer_cpu(environ) == "set" and environ == {"JAX_PLATFORMS": "cpu"}
    environ = {"JAX_PLATFORMS": "cuda"}
    assert console.prefer_cpu(environ) == "user-set" and environ == {"JAX_PLATFORMS": "cuda"}
    monkeypatch.setattr(console, "accelerator_installed", lambda: True)
    environ = {}
    assert console.prefer_cpu(environ) == "accelerator" and environ == {}


def test_accelerator_installed_sees_a_pjrt_plugin(tmp_path, monkeypatch):
    # A jax_plugins namespace package with one plugin module, as the CUDA and ROCm plugins install.
    monkeypatch.setattr(console.importlib.metadata, "entry_points", lambda group: [])
    empty = tmp_path / "empty" / "jax_plugins"
    empty.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path / "empty"))
    with_plugin = tmp_path / "plugin" / "jax_plugins" / "xla_fake"
    with_plugin.mkdir(parents=True)
    (with_plugin / "__init__.py").write_text("")
    if console.importlib.util.find_spec("libtpu") is None:
        monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
        assert not console.accelerator_installed()  # an empty jax_plugins folder is no plugin
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    assert console.accelerator_installed()


# ------------------------------------------------------------------------------------ the trainer
@pytest.fixture(scope="module")
def resumed_runs(tiny_run, tiny_config, synthfer_dir, tmp_path_factory):
    """The 6-step tiny run continued to step 8 (a restore, 2 steps, a save, the final evaluation), in
    two subprocesses at once without JAX_PLATFORMS: by default, and with --verbosity=0."""
    tmp = tmp_path_factory.mktemp("console")
    config = tiny_config(synthfer_dir, 8)
    env = _env(8)
    env.pop("JAX_PLATFORMS")  # what a user's shell has: the command must choose the CPU itself

    def run(extra):
        workdir = tmp / ("verbose" if extra else "default")
        shutil.copytree(tiny_run[0], workdir)
        return subprocess.run(
            [sys.executable, "-m", "grace_jax.main", *_args(config, workdir), *extra],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        default, verbose = pool.map(run, [[], ["--verbosity=0"]])
    return default, verbose


@pytest.mark.slow
def test_default_console_has_no_third_party_info(resumed_runs):
    default, _ = resumed_runs
    out = default.stdout + default.stderr
    assert default.returncode == 0, out[-4000:]
    assert _third_party_info(out) == [], out[-4000:]
    # orbax's warnings about grace_jax's own use of it: a handler override, a step metadata file looked for
    # in an item folder (checkpointing.py) are fixed at their cause.
    for text in ("Unable to initialize backend", "overriding jax.Array", "Metadata file does not exist"):
        assert text not in out, out[-4000:]
    assert "Resumed from" in out and re.search(r"^step 8/8 ", out, re.M) and re.search(r"^eval step 8: UAR ", out, re.M)
    assert len(out.splitlines()) <= 6, out  # resumed, one progress line, one eval line


@pytest.mark.slow
def test_verbosity_brings_the_libraries_info_back(resumed_runs):
    _, verbose = resumed_runs
    out = verbose.stdout + verbose.stderr
    assert verbose.returncode == 0, out[-4000:]
    info = _third_party_info(out)
    assert len(info) > 20 and any("checkpoint" in line for line in info), out[-4000:]
    assert re.search(r"^eval step 8: UAR ", out, re.M)
    if not console.accelerator_installed():  # jax probes every platform it has a runtime for
        assert "Unable to initialize backend" not in out, out[-4000:]
