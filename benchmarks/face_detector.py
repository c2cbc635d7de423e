"""Face detection speed: ms per frame of grace_jax.faces.FaceDetector, stage by stage.

  python benchmarks/face_detector.py                               # 360p, 720p, 1080p frames
  python benchmarks/face_detector.py --sizes=480x640 --frames=64 --runs=9
  python benchmarks/face_detector.py --tflite=/tmp/face_detection_full_range.tflite

Frames are generated scenes with one pasted face (tests/faces/face_scenes.py), --frames of them per
call (one call = one clip's sampled frames). Stages, each timed on its own: `letterbox` (Pillow
resize into the 192x192 input, host), `network` (the jitted program: BlazeFace, decoding, top-k;
batches of --batch), and `detect` (all of it, plus weighted NMS and the mapping back to frame
pixels). With --tflite and ai-edge-litert importable, the original model runs on the same
letterboxed inputs one frame at a time (its only batch size) beside the JAX network. Runs
alternate between the timed things so background load hits all alike. Prints the median and the
minimum ms per frame, and the first call's compile time.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "faces"))

_SIZES = flags.DEFINE_list("sizes", ["360x640", "720x1280", "1080x1920"], "Frame sizes, HxW.")
_FRAMES = flags.DEFINE_integer("frames", 16, "Frames per call.")
_BATCH = flags.DEFINE_integer("batch", 16, "FaceDetector batch size (frames per network call).")
_RUNS = flags.DEFINE_integer("runs", 5, "Timed runs per stage and size, after one warm-up.")
_TFLITE = flags.DEFINE_string("tflite", None, "face_detection_full_range.tflite, for comparison.")


def main(argv):
    del argv
    import jax
    import numpy as np
    from face_scenes import paste_face, scene

    import grace_jax  # noqa: F401  (before jax starts: XLA:CPU numerics, grace_jax/infra/cpu_numerics.py)
    from grace_jax.faces import FaceDetector, letterbox

    detector = FaceDetector(batch_size=_BATCH.value)
    reference = None
    if _TFLITE.value:
        from ai_edge_litert import interpreter as litert

        reference = litert.Interpreter(model_path=_TFLITE.value)
        reference.allocate_tensors()
        ref_in = reference.get_input_details()[0]["index"]

        def run_reference(inputs):
            for x in inputs:
                reference.set_tensor(ref_in, (x.astype(np.float32) / 127.5 - 1)[None])
                reference.invoke()

    rng = np.random.default_rng(0)
    n = _FRAMES.value
    start = time.perf_counter()
    detector.run_network(np.zeros((1, 192, 192, 3), np.uint8))
    compile_s = time.perf_counter() - start

    rows = []
    for size in _SIZES.value:
        h, w = (int(v) for v in size.lower().split("x"))
        side = min(h, w) // 2
        frames = np.stack([paste_face(scene(rng, h, w), (w - side) // 2, (h - side) // 2, side)[0] for _ in range(n)])
        inputs, _ = letterbox(frames)
        stages = {
            "letterbox": lambda frames=frames: letterbox(frames),
            "network": lambda inputs=inputs: jax.block_until_ready(detector.run_network(inputs)),
            "detect": lambda frames=frames: detector.detect(frames),
        }
        if reference is not None:
            stages["tflite network"] = lambda inputs=inputs: run_reference(inputs)
        times = {k: [] for k in stages}
        for fn in stages.values():  # warm-up (compiles nothing new: one program per detector)
            fn()
        found = sum(len(d) == 1 for d in detector.detect(frames))
        for _ in range(_RUNS.value):
            for name, fn in stages.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) * 1000 / n)
        for name, values in times.items():
            rows.append((f"{h}x{w}", name, float(np.median(values)), min(values), f"{found}/{n}"))

    print(
        f"\nFaceDetector (BlazeFace full-range in JAX), {n} frames per call, batch {_BATCH.value}, "
        f"{jax.default_backend()} ({os.cpu_count()} CPU cores, jax {jax.__version__}); "
        f"{_RUNS.value} runs each, alternating; first network call (compile + run) "
        f"{compile_s:.1f} s\n"
    )
    print(f"{'frames':<12}{'stage':<16}{'median ms/frame':>17}{'min ms/frame':>14}{'faces found':>13}")
    for frame, name, med, low, found in rows:
        print(f"{frame:<12}{name:<16}{med:>17.2f}{low:>14.2f}{found:>13}")


if __name__ == "__main__":
    app.run(main)
