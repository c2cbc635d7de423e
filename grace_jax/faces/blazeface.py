"""MediaPipe's BlazeFace full-range face detector network, in JAX.

The network of `face_detection_full_range.tflite` (MediaPipe, Apache-2.0), op for op as
tools/convert_blazeface.py reads its graph: a 3x3/2 stem, 20 residual blocks of two depthwise-
separable convolutions, and a feature pyramid that brings the 6x6 features back up to the 48x48 grid
of the two heads. Input [B,192,192,3] float32 in [-1, 1]; per grid cell (row-major, 48*48 = 2304
anchors) one face logit and 16 regressors (box centre offset x, y, width, height, then 6 keypoints
x, y; all in input pixels, the offsets relative to the cell centre; see `grace_jax.faces.decode`).

Parameters are a flat dict keyed by the .tflite tensor names (`conv2d_5/Kernel`, ...), the names
the shipped .npz keeps, in JAX layout (`grace_jax.faces.weights.load_params`): HWIO conv kernels,
[3,3,1,C] depthwise kernels, [I,O] for the 1x1 convolutions. The names follow the graph's own
numbering: the k-th CONV_2D of the graph is `conv2d_k` (`conv2d` for k=0), the k-th
DEPTHWISE_CONV_2D is `depthwise_conv2d_k`, in the order this module applies them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

INPUT_SIZE = 192
GRID = 48
NUM_ANCHORS = GRID * GRID
NUM_REGRESSORS = 16  # box (cx, cy, w, h) + 6 keypoints (x, y)

# Backbone blocks in graph order: (bottleneck channels, output channels, stride). A stride-2 block
# halves the grid: 96 -> 48 -> 24 -> 12 -> 6.
BACKBONE = (
    (8, 32, 1), (8, 32, 1),
    (12, 48, 2), (12, 48, 1), (16, 64, 1),
    (24, 96, 2), (32, 128, 1), (32, 128, 1),
    (36, 144, 2), (48, 192, 1), (64, 256, 1),
    (96, 384, 2), (96, 384, 1), (96, 384, 1), (96, 384, 1),
)  # fmt: skip
# Taps the pyramid reads (index of the backbone block whose output it is): 48x48x64, 24x24x128,
# 12x12x256, coarsest last.
TAPS = (4, 7, 10)
# Pyramid levels, coarse to fine: (channels, blocks of (bottleneck, channels, 1) after the merge).
PYRAMID = ((96, ((48, 96, 1), (48, 96, 1))), (64, ((32, 64, 1), (32, 64, 1))), (48, ((24, 48, 1),)))


class _Names:
    """Hands out the graph's weight names in the order the graph uses them."""

    def __init__(self):
        self.conv = 0
        self.depthwise = 0

    def next_conv(self) -> str:
        name = "conv2d" if self.conv == 0 else f"conv2d_{self.conv}"
        self.conv += 1
        return name

    def next_depthwise(self) -> str:
        name = "depthwise_conv2d" if self.depthwise == 0 else f"depthwise_conv2d_{self.depthwise}"
        self.depthwise += 1
        return name


def _conv3x3(params, name: str, x: jax.Array, stride: int) -> jax.Array:
    # TFLite SAME padding: for stride 2 on an even size it pads 0 before and 1 after, which is also
    # lax's "SAME" rule (the extra row/column goes after).
    y = jax.lax.conv_general_dilated(
        x, params[name + "/Kernel"], (stride, stride), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    return y + params[name + "/Bias"]


def _depthwise3x3(params, name: str, x: jax.Array, stride: int) -> jax.Array:
    return _depthwise3x3_op(x, params[name + "/Kernel"], params[name + "/Bias"], stride)


@functools.partial(jax.jit, static_argnames="stride")
def _depthwise3x3_op(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int) -> jax.Array:
    """x [B,H,W,C], kernel [3,3,1,C], bias [C] -> [B,ceil(H/stride),ceil(W/stride),C].

    Nine shifted multiply-adds rather than a grouped convolution: XLA:CPU runs grouped
    (feature_group_count=C) convolutions ~75x slower than this fused elementwise form (33 ms vs
    0.45 ms per frame for one 96x96x32 layer on 2 cores); on accelerators the two are alike. Its
    own jit, like jnp's functions, makes it one op when the network runs eagerly (an outer jit
    inlines it). Padding as TFLite's SAME: 1 on each side at stride 1; 0 before and 1 after at
    stride 2 on an even size.
    """
    b, h, w, c = x.shape
    ho, wo = -(-h // stride), -(-w // stride)
    lo = 1 if stride == 1 else 0
    xp = jnp.pad(x, ((0, 0), (lo, 1), (lo, 1), (0, 0)))
    y = bias
    for i in range(3):
        for j in range(3):
            window = jax.lax.slice(
                xp, (0, i, j, 0), (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                (1, stride, stride, 1),
            )  # fmt: skip
            y = y + window * kernel[i, j, 0]
    return y


def _conv1x1(params, name: str, x: jax.Array, relu: bool = False) -> jax.Array:
    return _conv1x1_op(x, params[name + "/Kernel"], params[name + "/Bias"], relu)


@functools.partial(jax.jit, static_argnames="relu")
def _conv1x1_op(x: jax.Array, kernel: jax.Array, bias: jax.Array, relu: bool) -> jax.Array:
    """x [B,H,W,I], kernel [I,O], bias [O] -> [B,H,W,O], optionally relu'd (one op when eager)."""
    y = jnp.einsum("bhwi,io->bhwo", x, kernel) + bias
    return jax.nn.relu(y) if relu else y


def _max_pool2x2(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@jax.jit
def upsample2x(x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,2H,2W,C]: bilinear, half-pixel centres, edges clamped (TFLite's op).

    Output pixel 2i sits at input coordinate i - 1/4, 2i+1 at i + 1/4, so each is 3/4 of its own
    input pixel plus 1/4 of the neighbour on that side (the pixel itself at the border).
    """

    def along(x: jax.Array, axis: int) -> jax.Array:
        n = x.shape[axis]
        prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                                jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)  # fmt: skip
        nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                               jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)  # fmt: skip
        even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
        out = jnp.stack([even, odd], axis=axis + 1)
        return out.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1 :])

    return along(along(x, 1), 2)


def _block(params, names: _Names, x: jax.Array, mid: int, out: int, stride: int) -> jax.Array:
    """Residual block: dw3x3 (stride) -> 1x1 -> relu -> dw3x3 -> 1x1, plus the shortcut, relu."""
    y = _depthwise3x3(params, names.next_depthwise(), x, stride)
    y = _conv1x1(params, names.next_conv(), y, relu=True)
    assert y.shape[-1] == mid, (y.shape, mid)  # the weights' widths are the table's
    y = _depthwise3x3(params, names.next_depthwise(), y, 1)
    y = _conv1x1(params, names.next_conv(), y)
    assert y.shape[-1] == out, (y.shape, out)
    return _residual(x, y, stride)


@functools.partial(jax.jit, static_argnames="stride")
def _residual(x: jax.Array, y: jax.Array, stride: int) -> jax.Array:
    """relu(shortcut(x) + y): the shortcut max-pools when the block is strided and appends zero
    channels when it widens (the graph's channel PAD: new channels start from y alone)."""
    shortcut = _max_pool2x2(x) if stride == 2 else x
    if y.shape[-1] > x.shape[-1]:
        shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, y.shape[-1] - x.shape[-1])))
    return jax.nn.relu(shortcut + y)


def forward(params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The network: x [B,192,192,3] float32 in [-1, 1] -> (regressors [B,2304,16], logits [B,2304]).

    Same outputs, in the same anchor order, as the .tflite's `reshaped_regressor_face_4` and
    `reshaped_classifier_face_4` (the latter without its trailing axis of 1).
    """
    if x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"BlazeFace full-range takes [B,{INPUT_SIZE},{INPUT_SIZE},3], got {x.shape}")
    names = _Names()
    x = jax.nn.relu(_conv3x3(params, names.next_conv(), x, 2))
    taps = []
    for i, (mid, out, stride) in enumerate(BACKBONE):
        x = _block(params, names, x, mid, out, stride)
        if i in TAPS:
            taps.append(x)
    # Pyramid: project the coarse map and the next finer tap to the level's width (each with a
    # relu), upsample the coarse one and add them (no relu after the add), then refine.
    for (channels, blocks), lateral in zip(PYRAMID, reversed(taps)):
        top = _conv1x1(params, names.next_conv(), x, relu=True)
        side = _conv1x1(params, names.next_conv(), lateral, relu=True)
        assert top.shape[-1] == side.shape[-1] == channels, (top.shape, side.shape, channels)
        x = side + upsample2x(top)
        for mid, out, stride in blocks:
            x = _block(params, names, x, mid, out, stride)
    logits = _conv1x1(params, "classifier_face_4", x)
    regressors = _conv1x1(params, "regressor_face_4", x)
    b = x.shape[0]
    return regressors.reshape(b, NUM_ANCHORS, NUM_REGRESSORS), logits.reshape(b, NUM_ANCHORS)
