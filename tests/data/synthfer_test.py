"""SynthFER's generation finds data_prep in the checkout, whatever the current directory."""

import os

import pytest

from grace_jax.data import synthfer
from grace_jax.infra import errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_checkout_goes_first_on_the_subprocess_path(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = synthfer._with_checkout_on_path()
    assert env["PYTHONPATH"].split(os.pathsep) == [REPO, "/elsewhere"]


def test_an_installed_package_without_data_prep_says_so(monkeypatch, tmp_path):
    package = tmp_path / "site-packages" / "grace_jax" / "data"
    package.mkdir(parents=True)
    monkeypatch.setattr(synthfer, "__file__", str(package / "synthfer.py"))
    with pytest.raises(errors.ConfigError, match=r"needs the repository's data_prep .*site-packages"):
        synthfer._with_checkout_on_path()
