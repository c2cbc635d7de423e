"""Shared by the face tests: one FaceDetector (its program compiles once per session)."""

import pytest


@pytest.fixture(scope="session")
def detector():
    from grace_jax.faces import FaceDetector

    return FaceDetector()
