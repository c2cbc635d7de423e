"""`python -m grace_jax.convert`: its usage errors, one line and exit 2. The conversion itself, through
this command, is tested in tests/interop/dferclip_test.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["tflite", "--checkpoint=x.pth", "--workdir=w"],
         "Usage: python -m grace_jax.convert {dferclip} --checkpoint=PATH.pth --workdir=RUN"),
        (["dferclip", "--checkpoint=x.pth"], "--checkpoint and --workdir are required."),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(tmp_path, args, message):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "grace_jax.convert", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    said = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert done.returncode == 2 and said == [f"grace_jax.convert: error: {message}"], done.stderr
    assert not os.listdir(tmp_path)
