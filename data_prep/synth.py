"""SynthFER: a seeded synthetic dynamic-facial-expression dataset that needs no download.

Each clip is a drawn face (skin-coloured ellipse, eyes, brows, mouth) on a background. Every clip starts
from a neutral face; over the clip the face moves towards a class-specific apex expression (happiness:
lip corners up, mouth widened, eyes narrowed; surprise: brows up, eyes wide, mouth open; ...), onset and
apex times varying per clip. The label lives only in these dynamics:

- static appearance (background colour and gradient, skin tone, face size and position) is drawn from
  the same distribution for every class, so the first frame says nothing about the class;
- class-irrelevant motion (head drift and zoom, blinks, background flicker, illumination drift) changes
  the pixels about as much as the expression does, so "anything moved" is no shortcut either.

The "hard" variant adds stronger class-irrelevant motion, again the same for every class: camera shake
(a whole-frame shift of ~1-2 px at 48 px every frame), one or two face-crop jumps (2-3 px for one frame),
talking (the mouth opening and closing 2-5 times per clip during part of it, on top of the expression)
and up to two lighting flashes (+15-30% gain for one frame). Its draws come from a stream of their own,
so a hard clip shares face, timing, standard distractors and noise with the standard clip of its seed.

Because the generator knows what moved, `sample_ground_truth` renders each clip twice more without noise:
the expression alone and the distractors alone, same seed and geometry (for localization metrics).

Class order is DFEW's: happiness, sadness, neutral, anger, surprise, disgust, fear.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from grace_jax.data.schema import BASIC_CLASSES

NUM_CLASSES = len(BASIC_CLASSES)

# Apex expression per class, in the order of EXPRESSION_FIELDS; neutral is all zeros.
EXPRESSION_FIELDS = ("mouth_curve", "mouth_open", "mouth_width", "eye_open", "brow_raise", "brow_tilt", "mouth_asym")
APEX = np.array(
    [
        [1.0, 0.3, 0.25, -0.45, 0.0, 0.0, 0.0],  # happiness: AU6 + AU12
        [-1.0, 0.0, -0.1, -0.25, 0.25, 0.9, 0.0],  # sadness: AU1 + AU4 + AU15
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # neutral
        [-0.2, 0.0, -0.35, -0.45, -0.8, -1.0, 0.0],  # anger: AU4 + AU7 + AU23
        [0.0, 1.0, -0.25, 0.7, 1.0, 0.0, 0.0],  # surprise: AU1 + AU2 + AU5 + AU26
        [-0.45, 0.15, 0.0, -0.35, -0.45, -0.3, 0.9],  # disgust: AU9 + AU10 (one-sided)
        [-0.3, 0.55, 0.4, 0.7, 0.6, 0.9, 0.0],  # fear: AU1 + AU2 + AU4 + AU5 + AU20
    ],
    dtype=np.float32,
)


VARIANTS = ("standard", "hard")
# Direction in EXPRESSION_FIELDS of the hard variant's talking: the mouth opens and narrows a little.
TALK_DIRECTION = np.array([0.0, 1.0, -0.3, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
# The hard variant's shifts are specified in pixels of a 48 px frame (the default side).
_HARD_REFERENCE_SIDE = 48.0


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Size and switches of SynthFER.

    `expression`/`distractors` switch the class motion / the class-irrelevant motion off (for tests and
    ground truth), `noise` the per-pixel N(0, 0.01) noise; none of them changes the random draws, so the
    renderings of one seed share geometry and timing. `variant`: one of VARIANTS (module docstring).
    """

    frame_size: int = 48
    min_frames: int = 12
    max_frames: int = 24
    expression: bool = True
    distractors: bool = True
    noise: bool = True
    variant: str = "standard"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"SynthFER variant {self.variant!r}: expected one of {', '.join(VARIANTS)}")


def clip_seed(base_seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Seed of clip `index` of `split`: fixed by (base_seed, split, index), independent of other clips."""
    return np.random.SeedSequence([int(base_seed), zlib.crc32(split.encode("utf-8")), int(index)])


def clip_label(index: int) -> int:
    """Label of clip `index`: classes cycle so every split is balanced."""
    return int(index) % NUM_CLASSES


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blend(image: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Alpha-composites a flat `colour` [3] over `image` [S,S,3] with `coverage` [S,S] in 0..1."""
    a = coverage[..., None]
    return image * (1.0 - a) + colour * a


def _coverage(signed_distance_px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed_distance_px, 0.0, 1.0)


def _segment_distance(x, y, x0, y0, x1, y1):
    """Distance of points (x, y) to the segment (x0, y0)-(x1, y1), same units as the inputs."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def render_face(
    size: int,
    *,
    centre: tuple[float, float],
    radii: tuple[float, float],
    skin: np.ndarray,
    background: np.ndarray,
    gradient: np.ndarray,
    expression: np.ndarray,
    blink: float,
    bg_gain: float,
    gain: float,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Draws one frame.

    Args:
      size: frame side S in pixels; all geometry is in units of the frame side (0..1).
      centre, radii: face ellipse centre (x, y) and half-axes (rx, ry).
      skin, background: RGB colours [3] in 0..1; gradient: RGB change [3] from top to bottom.
      expression: [7] values of EXPRESSION_FIELDS (0 = neutral).
      blink: eye openness multiplier (1 open, ~0 closed); bg_gain: background brightness factor;
      gain: whole-frame illumination factor.
      offset: (dx, dy) shift of the whole frame, background included, in units of the frame side (camera
        shake); the scene is analytic, so what enters at an edge is drawn, not padded.

    Returns:
      float32 RGB [S, S, 3] in 0..1.
    """
    curve, mouth_open, width, eye_open, brow_raise, brow_tilt, asym = (float(v) for v in expression)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    if offset != (0.0, 0.0):
        x, y = np.meshgrid(coords - np.float32(offset[0]), coords - np.float32(offset[1]))
    else:  # The standard variant's exact arithmetic: its clips stay bit-identical.
        x, y = np.meshgrid(coords, coords)
    px = float(size)
    image = (background + gradient * (y[..., None] - 0.5)) * bg_gain
    cx, cy = centre
    rx, ry = radii

    face = (np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * min(rx, ry) * px
    image = _blend(image, _coverage(face), skin)
    dark = skin * 0.25
    # Nose: a fixed shaded stroke, part of static appearance.
    nose = _segment_distance(x, y, cx, cy - 0.05 * ry, cx, cy + 0.18 * ry) * px - 0.035 * rx * px
    image = _blend(image, 0.5 * _coverage(nose), skin * 0.7)

    for side in (-1.0, 1.0):
        ex, ey = cx + side * 0.36 * rx, cy - 0.18 * ry
        half_w = 0.16 * rx
        half_h = max(0.075 * ry * (1.0 + eye_open) * blink, 0.004)
        eye = (np.sqrt(((x - ex) / half_w) ** 2 + ((y - ey) / half_h) ** 2) - 1.0) * min(half_w, half_h) * px
        image = _blend(image, _coverage(eye), dark)
        brow_y = cy - 0.45 * ry - 0.22 * ry * brow_raise
        inner_y = brow_y - 0.18 * ry * brow_tilt
        brow = _segment_distance(x, y, cx + side * 0.12 * rx, inner_y, cx + side * 0.58 * rx, brow_y)
        image = _blend(image, _coverage(brow * px - 0.045 * ry * px), dark)

    mx, my = cx, cy + 0.47 * ry
    half_width = 0.34 * rx * (1.0 + width)
    s = np.clip((x - mx) / half_width, -1.0, 1.0)
    mid = my - curve * 0.24 * ry * (s * s - 0.35) - asym * 0.24 * ry * np.maximum(s, 0.0)
    gap = mouth_open * 0.2 * ry * (1.0 - s * s)
    lip = 0.045 * ry
    outside_x = (np.abs(x - mx) - half_width) * px
    lips = np.maximum(np.abs(y - mid) * px - (gap + lip) * px, outside_x)
    image = _blend(image, _coverage(lips), np.array([0.55, 0.15, 0.2], np.float32) * (0.6 + 0.4 * skin))
    if gap.max() > 0:
        inner = np.maximum(np.abs(y - mid) * px - gap * px, outside_x)
        image = _blend(image, _coverage(inner), np.array([0.12, 0.04, 0.05], np.float32))
    return np.clip(image * gain, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class HardMotion:
    """The hard variant's per-frame distractors of one clip (T frames).

    offsets: float [T, 2] whole-frame shift (dx, dy) in units of the frame side: camera shake plus
      crop jumps; frame 0 is the reference (no shift), so every clip still starts from its standard face.
    talk: float [T] talking amount along TALK_DIRECTION, 0 outside the talking part of the clip.
    gain: float [T] whole-frame gain factor: 1, or 1.15..1.30 on a lighting-flash frame.
    """

    offsets: np.ndarray
    talk: np.ndarray
    gain: np.ndarray


def hard_motion(rng: np.random.Generator, num_frames: int) -> HardMotion:
    """Draws the hard variant's distractors for a clip of `num_frames` frames, in a fixed order whatever
    the config's switches (so all renderings of a seed agree). The same distribution for every class.
    Shifts are in frame units, so they keep their share of the frame at any frame side."""
    px = 1.0 / _HARD_REFERENCE_SIDE  # one pixel of a 48 px frame, in frame units
    later = np.arange(1, num_frames)  # frames that may jump or flash: frame 0 stays the reference
    # (a) Camera shake: a sway of 0.2-0.5 px per axis, 1-3 cycles per clip, plus 0.1 px of jitter per
    # frame. Stronger per-frame shake moves every edge of the face more than the expression moves its
    # parts, leaving almost no patch where the expression is the main motion to localize.
    sway = rng.uniform(0.2, 0.5, 2) * px
    sway_cycles = rng.uniform(1.0, 3.0, 2)
    sway_phase = rng.uniform(0.0, 2 * np.pi, 2)
    tau = np.arange(num_frames) / max(num_frames - 1, 1)
    offsets = sway * (np.sin(2 * np.pi * sway_cycles * tau[:, None] + sway_phase) - np.sin(sway_phase))
    offsets += rng.uniform(-0.1, 0.1, (num_frames, 2)) * px
    offsets[0] = 0.0
    # (b) Face-crop jumps: 1-2 frames moved by 2-3 px for that frame only.
    num_jumps = min(int(rng.integers(1, 3)), len(later))
    jump_frames = rng.choice(later, size=num_jumps, replace=False) if num_jumps else later[:0]
    jump_angle = rng.uniform(0.0, 2 * np.pi, num_jumps)
    jump_size = rng.uniform(2.0, 3.0, num_jumps) * px
    offsets[jump_frames] += jump_size[:, None] * np.stack([np.cos(jump_angle), np.sin(jump_angle)], axis=-1)
    # (c) Talking: 2-5 open-close cycles per clip duration during a random 40-80% of it, eased in and out.
    amplitude = rng.uniform(0.25, 0.45)
    cycles = rng.uniform(2.0, 5.0)
    length = rng.uniform(0.4, 0.8)
    start = rng.uniform(0.0, 1.0 - length)
    phase = (tau - start) / length
    envelope = _smoothstep(phase / 0.2) * _smoothstep((1.0 - phase) / 0.2)
    talk = amplitude * envelope * 0.5 * (1.0 - np.cos(2 * np.pi * cycles * (tau - start)))
    # (d) Lighting flashes: 0-2 frames brighter by 15-30% for that frame only.
    num_flashes = min(int(rng.integers(0, 3)), len(later))
    flash_frames = rng.choice(later, size=num_flashes, replace=False) if num_flashes else later[:0]
    gain = np.ones(num_frames)
    gain[flash_frames] *= 1.0 + rng.uniform(0.15, 0.30, num_flashes)
    return HardMotion(offsets=offsets, talk=talk, gain=gain)


def sample_clip(seed, label: int, config: SynthConfig = SynthConfig()) -> np.ndarray:
    """Renders one SynthFER clip.

    Args:
      seed: int or np.random.SeedSequence; the same seed and label give the same clip.
      label: class index in BASIC_CLASSES order.
      config: frame side, frame-count range, variant, and the expression/distractor/noise switches.

    Returns:
      uint8 RGB frames [T, S, S, 3], T uniform in [min_frames, max_frames], S = config.frame_size.
    """
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"SynthFER label {label} out of range 0..{NUM_CLASSES - 1}")
    rng = np.random.default_rng(seed)
    num_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    # Static appearance: drawn before, and independently of, anything class-related.
    tone = rng.uniform()
    skin = (np.array([0.96, 0.80, 0.68]) * (1 - tone) + np.array([0.42, 0.28, 0.18]) * tone).astype(np.float32)
    skin = np.clip(skin + rng.normal(0, 0.03, 3), 0, 1).astype(np.float32)
    background = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    gradient = rng.normal(0, 0.15, 3).astype(np.float32)
    rx = rng.uniform(0.26, 0.31)
    radii = (rx, rx * rng.uniform(1.15, 1.3))
    centre0 = np.array([0.5, 0.5]) + rng.uniform(-0.03, 0.03, 2)
    intensity_scale = rng.uniform(0.85, 1.0)
    onset = rng.uniform(0.05, 0.35)
    rise = rng.uniform(0.3, 0.5)
    # Class-irrelevant motion, drawn with the same distribution for every class.
    drift = rng.normal(0, 1, 2)
    drift *= rng.uniform(0.01, 0.03) / (np.linalg.norm(drift) + 1e-9)
    wobble_phase = rng.uniform(0, 2 * np.pi, 2)
    zoom = rng.uniform(-0.04, 0.04)
    flicker_amp, flicker_freq, flicker_phase = rng.uniform(0.02, 0.06), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
    light = rng.uniform(-0.04, 0.04)
    blinks = rng.uniform(0.15, 1.0, size=rng.integers(0, 3))
    noise_seed = rng.integers(2**31)
    # Drawn after every draw above, so that the hard variant leaves the standard clip's draws untouched.
    hard_seed = rng.integers(2**31)

    apex = APEX[label] * intensity_scale if config.expression else np.zeros_like(APEX[0])
    noise_rng = np.random.default_rng(noise_seed)
    hard = hard_motion(np.random.default_rng(hard_seed), num_frames) if config.variant == "hard" else None
    frames = []
    for t in range(num_frames):
        tau = t / max(num_frames - 1, 1)
        expression = apex * _smoothstep((tau - onset) / rise)
        if config.distractors:
            shift = drift * tau + 0.01 * np.sin(2 * np.pi * tau + wobble_phase) - 0.01 * np.sin(wobble_phase)
            centre = tuple(centre0 + shift)
            scale = 1.0 + zoom * tau
            blink = 1.0
            for b in blinks:
                blink = min(blink, float(np.clip(abs(tau - b) * num_frames / 1.5, 0.05, 1.0)))
            bg_gain = 1.0 + flicker_amp * (
                np.sin(2 * np.pi * flicker_freq * tau + flicker_phase) - np.sin(flicker_phase)
            )
            gain = 1.0 + light * tau
            offset = (0.0, 0.0)
            if hard is not None:
                expression = expression + hard.talk[t] * TALK_DIRECTION
                offset = (float(hard.offsets[t, 0]), float(hard.offsets[t, 1]))
                gain = gain * float(hard.gain[t])
        else:
            centre, scale, blink, bg_gain, gain, offset = tuple(centre0), 1.0, 1.0, 1.0, 1.0, (0.0, 0.0)
        image = render_face(
            config.frame_size,
            centre=centre,
            radii=(radii[0] * scale, radii[1] * scale),
            skin=skin,
            background=background,
            gradient=gradient,
            expression=expression,
            blink=blink,
            bg_gain=bg_gain,
            gain=gain,
            offset=offset,
        )
        if config.noise:  # noise_rng serves the noise alone: skipping it changes no other draw
            image = image + noise_rng.normal(0, 0.01, image.shape).astype(np.float32)
        frames.append(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.stack(frames)


def sample_ground_truth(seed, label: int, config: SynthConfig = SynthConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Where the expression is and where the distractors are, for clip (`seed`, `label`, `config`).

    Both are `sample_clip` of the same seed, variant and sizes without noise: `expression` with the
    class motion only (no distractors: the face holds its first-frame pose, size and lighting),
    `distractors` with the class-irrelevant motion only (a neutral face under the clip's drift, blinks,
    flicker, lighting and, for "hard", shake, jumps, talking and flashes). The config's own
    expression/distractors/noise switches are overridden.

    Returns:
      (expression, distractors): uint8 RGB [T, S, S, 3] each, T and S those of `sample_clip`.
    """
    expression = sample_clip(seed, label, dataclasses.replace(config, expression=True, distractors=False, noise=False))
    distractors = sample_clip(seed, label, dataclasses.replace(config, expression=False, distractors=True, noise=False))
    return expression, distractors
