"""Does a map find the expression? Localization against SynthFER's ground truth (docs: model).

SynthFER's generator renders every test clip twice more with the same seed: with the expression only
and with the irrelevant motion only (data_prep/synth.py). Between two sampled frames, a patch is an
**expression token** when the expression moved it more than the irrelevant motion did (and visibly,
by at least `MIN_MOTION` on average). Frame 0 has no predecessor and no expression token.

For a map over a clip's T*P tokens (a class's transport mass, the motion weights, ...):

- **share**: the map's mass on expression tokens (1 = all of it there); uniform weights give the
  expression tokens' share of the clip (**chance**), so share / chance is how much better than
  uniform a map does;
- **pointing game**: in each frame that has expression tokens, whether the map's largest patch is one.

Clips without expression tokens (neutral faces) have no share and are left out of the averages.
All functions are pure and jittable; `Accumulator` sums per-clip figures per class on the host.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from grace_jax.models import motion

__all__ = [
    "MIN_MOTION",
    "Accumulator",
    "expression_mask",
    "flat_metrics",
    "has_ground_truth",
    "localization",
    "format_table",
    "one_line",
    "shift_frame",
]

# One grey level (of 255) on average over a patch: below it a change is not visible.
MIN_MOTION = 1.0 / 255.0


def _sampled_motion(frames: jax.Array, patch_size: int) -> jax.Array:
    """uint8 or 0..255 frames [B,T,H,W,3] -> mean |x_t - x_{t-1}| per patch, in 0..1, [B,T,P];
    frame 0 gets 0 (nothing moved before it)."""
    m = motion.pixel_motion(frames.astype(jnp.float32) / 255.0, patch_size)
    return m.at[:, 0].set(0.0)


def expression_mask(
    *, expression: jax.Array, distractor: jax.Array, patch_size: int, min_motion: float = MIN_MOTION
) -> jax.Array:
    """Expression tokens.

    Args:
      expression: [B,T,H,W,3] uint8, the sampled frames rendered with the expression only.
      distractor: [B,T,H,W,3] uint8, the same frames with the irrelevant motion only.
      patch_size: the ViT's patch side (H, W multiples of it).
      min_motion: least mean absolute change (0..1 pixel units) that counts as motion.

    Returns:
      [B,T,P] bool, P = (H/patch) * (W/patch) in ViT raster order.
    """
    e = _sampled_motion(expression, patch_size)
    d = _sampled_motion(distractor, patch_size)
    return (e > d) & (e >= min_motion)


def localization(*, maps: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Per-clip localization of maps against expression tokens.

    Args:
      maps: [B,T,P] non-negative maps (need not be normalised).
      mask: [B,T,P] bool expression tokens (`expression_mask`).

    Returns:
      {"share": [B] mass on expression tokens / total mass, "chance": [B] the expression tokens'
       share of the clip, "hits": [B] frames whose largest patch is an expression token, "frames": [B]
       frames with an expression token, "valid": [B] bool, the clip has expression tokens}.
    """
    maps = maps.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    total = jnp.maximum(maps.sum((1, 2)), 1e-30)
    share = (maps * m).sum((1, 2)) / total
    chance = m.mean((1, 2))
    has = m.max(-1) > 0  # [B,T]
    top = jnp.argmax(maps, axis=-1)  # [B,T]
    on = jnp.take_along_axis(mask, top[..., None], axis=-1)[..., 0]  # [B,T]
    return {
        "share": share,
        "chance": chance,
        "hits": (on & has).sum(-1).astype(jnp.float32),
        "frames": has.sum(-1).astype(jnp.float32),
        "valid": has.any(-1),
    }


def shift_frame(video: jax.Array, frame: int, pixels: int) -> jax.Array:
    """A face-crop jump: frame `frame` of [B,T,H,W,C] moved `pixels` right and down, edges repeated."""
    x = video[:, frame]
    x = jnp.concatenate([jnp.repeat(x[:, :1], pixels, axis=1), x[:, :-pixels]], axis=1)
    x = jnp.concatenate([jnp.repeat(x[:, :, :1], pixels, axis=2), x[:, :, :-pixels]], axis=2)
    return video.at[:, frame].set(x)


@dataclasses.dataclass
class Accumulator:
    """Sums per-clip `localization` results of several maps, per true class, over eval batches."""

    class_names: list[str]
    sums: dict = dataclasses.field(default_factory=dict)

    def add(self, results: dict[str, dict[str, np.ndarray]], labels: np.ndarray, mask: np.ndarray) -> None:
        """results: map name -> `localization` output (host arrays [B]); labels [B]; mask [B] real rows."""
        labels = np.asarray(labels)
        for name, r in results.items():
            valid = np.asarray(r["valid"], bool) & np.asarray(mask, bool)
            for key in ("share", "chance", "hits", "frames"):
                table = self.sums.setdefault(name, {}).setdefault(key, np.zeros(len(self.class_names)))
                np.add.at(table, labels[valid], np.asarray(r[key], np.float64)[valid])
            clips = self.sums[name].setdefault("clips", np.zeros(len(self.class_names)))
            np.add.at(clips, labels[valid], 1.0)

    def summary(self) -> dict:
        """{map name: {"per_class": {class: {"share", "chance", "pointing", "clips"}}, "share",
        "chance", "pointing" (means over the classes that have expression tokens), "classes"}}."""
        out = {}
        for name, s in self.sums.items():
            per_class = {}
            for c, cls in enumerate(self.class_names):
                n = s["clips"][c]
                if n == 0:
                    continue
                per_class[cls] = {
                    "share": float(s["share"][c] / n),
                    "chance": float(s["chance"][c] / n),
                    "pointing": float(s["hits"][c] / max(s["frames"][c], 1.0)),
                    "clips": int(n),
                }
            rows = list(per_class.values())
            if not rows:  # no clip with expression tokens: nothing to average
                continue
            out[name] = {
                "per_class": per_class,
                **{key: float(np.mean([r[key] for r in rows])) for key in ("share", "chance", "pointing")},
                "classes": len(rows),
            }
        return out


def has_ground_truth(manifest: dict, split: str) -> bool:
    """Whether a dataset's manifest says `split`'s records carry localization ground truth."""
    return split in (manifest.get("synth") or {}).get("ground_truth_splits", ())


def flat_metrics(summary: dict | None) -> dict[str, float]:
    """A `Accumulator.summary` as metrics.jsonl scalars: "loc/<map>/share" etc. (empty for None)."""
    out: dict[str, float] = {}
    for name, s in (summary or {}).items():
        for key in ("share", "chance", "pointing"):
            out[f"loc/{name}/{key}"] = s[key]
        for cls, row in s["per_class"].items():
            out[f"loc/{name}/share/{cls}"] = row["share"]
    return out


# Printed in this order, under these names, by `one_line`.
_SHOWN = (("predicted_class_map", "class map"), ("motion_weights", "weights"), ("pixel_prior", "pixel prior"))


def format_table(summary: dict) -> str:
    """Per class: the expression tokens' share (uniform) and each map's share and pointing game."""
    names = [n for n, _ in _SHOWN if n in summary] + [n for n in summary if n not in dict(_SHOWN)]
    classes = list(next(iter(summary.values()))["per_class"])
    width = max(8, *(len(c) for c in classes))
    head = f"  {'class':<{width}}  uniform" + "".join(f"  {n[:22]:>22}" for n in names)
    lines = ["  mass on expression tokens (pointing game) per map:", head]
    for cls in classes + ["mean"]:
        rows = [summary[n]["per_class"].get(cls) if cls != "mean" else summary[n] for n in names]
        chance = rows[0]["chance"] if rows[0] else float("nan")
        cells = "".join(f"  {r['share']:>13.3f} ({r['pointing']:.2f})" if r else f"  {'-':>22}" for r in rows)
        lines.append(f"  {cls:<{width}}  {chance:7.3f}{cells}")
    return "\n".join(lines)


def one_line(summary: dict | None) -> str:
    """The eval line's localization part: mass on expression tokens per map, and chance."""
    if not summary:
        return ""
    parts = [f"{label} {summary[name]['share']:.3f}" for name, label in _SHOWN if name in summary]
    chance = next(iter(summary.values()))["chance"]
    return f"; expression share: {', '.join(parts)} (uniform {chance:.3f})"
