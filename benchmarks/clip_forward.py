"""CLIP image-tower forward: grace_jax (Flax, jitted) vs transformers' PyTorch CLIP, same weights.

  python benchmarks/clip_forward.py                       # ViT-B/16, batch 16 (one 16-frame clip)
  python benchmarks/clip_forward.py --variant=ViT-B/32 --batch=32 --runs=9

Both sides get the same random weights (written once in the Hugging Face layout) and the same
images; runs alternate between the two so background load hits both alike. Prints one table with
the median and spread of each side and the ratio grace_jax / PyTorch (below 1.0: grace_jax faster).
"""

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

_VARIANT = flags.DEFINE_string("variant", "ViT-B/16", "CLIP variant.")
_BATCH = flags.DEFINE_integer("batch", 16, "Images per forward (16 = one 16-frame clip).")
_RUNS = flags.DEFINE_integer("runs", 7, "Timed runs per side, after warm-up.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed runs per side.")


def main(argv):
    del argv
    import clip_fixtures
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from grace_jax.models import clip as clip_lib
    from grace_jax.models import clip_checkpoint

    config = clip_lib.clip_config(_VARIANT.value)
    size = config.vision.image_size
    with tempfile.TemporaryDirectory() as tmp:
        reference = clip_fixtures.write_hf_clip(tmp, config)
        model = clip_checkpoint.load_pretrained(tmp)
    images = np.random.RandomState(0).randn(_BATCH.value, size, size, 3).astype(np.float32)
    images_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    images_jax = jnp.asarray(images)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward_jax(state, x):
        return nnx.merge(graphdef, state).encode_image(x)

    def run_jax():
        jax.block_until_ready(forward_jax(state, images_jax))

    @torch.inference_mode()
    def run_torch():
        out = reference.vision_model(pixel_values=images_torch)
        hidden = reference.vision_model.post_layernorm(out.last_hidden_state)
        reference.visual_projection(hidden)

    start = time.perf_counter()
    run_jax()
    compile_s = time.perf_counter() - start
    for _ in range(_WARMUP.value):
        run_jax()
        run_torch()
    times = {"grace_jax": [], "pytorch": []}
    for _ in range(_RUNS.value):
        for name, fn in (("grace_jax", run_jax), ("pytorch", run_torch)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    med = {k: float(np.median(v)) for k, v in times.items()}
    print(
        f"\nCLIP {_VARIANT.value} image tower, batch {_BATCH.value} x {size}px, CPU "
        f"({os.cpu_count()} cores, torch threads {torch.get_num_threads()}, jax {jax.__version__}, "
        f"torch {torch.__version__}); {_RUNS.value} runs each, alternating; first jax call "
        f"(compile + run) {compile_s:.1f} s\n"
    )
    print(f"{'implementation':<16}{'median s':>10}{'min s':>10}{'max s':>10}{'images/s':>10}")
    for name, values in times.items():
        print(f"{name:<16}{med[name]:>10.3f}{min(values):>10.3f}{max(values):>10.3f}{_BATCH.value / med[name]:>10.1f}")
    print(f"\nratio grace_jax / pytorch (median): {med['grace_jax'] / med['pytorch']:.2f}")


if __name__ == "__main__":
    app.run(main)
