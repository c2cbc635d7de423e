"""Annotation lists in the common DFER format and re-rooting of paths written on another machine.

A list has one clip per line, `<frame_dir> <num_frames> <label>` with 0-based labels, e.g.
`/home/x/DFEW/DFEW_Frame_Face/03271 96 0`. The path is everything before the last two fields, so folder
names with spaces survive. Blank lines and lines starting with `#` are ignored.
"""

from __future__ import annotations

import os
import pathlib

from data_prep.sources.clip_spec import BadClip, ClipSpec


def _parts(path: str) -> tuple[str, ...]:
    # Lists made on Windows use backslashes; a POSIX path never contains one in practice.
    return pathlib.PurePosixPath(path.replace("\\", "/")).parts


def reroot(path: str, root: str | None, anchors: tuple[str, ...], base_dir: str) -> tuple[str, str]:
    """Maps a path from a list onto this machine and derives the clip id.

    With `root`, the part of `path` after the last component equal (case-insensitively) to one of
    `anchors` (the dataset's own folder names, e.g. "DFEW", plus the root's own name) is joined to
    `root`: `/home/x/DFEW/DFEW_Frame_Face/03271` with root `/data/DFEW` gives
    `/data/DFEW/DFEW_Frame_Face/03271`. A relative path is taken relative to `root`, or to `base_dir`
    (the list's folder) without a root. An absolute path with no anchor is kept as written.

    Returns:
      (local path, clip id), the clip id being the path below the dataset folder with "/" separators
      (`DFEW_Frame_Face/03271`), or the path as written when no anchor was found.
    """
    parts = _parts(path)
    lowered = {a.lower() for a in anchors if a}
    anchor_at = max((i for i, p in enumerate(parts) if p.lower() in lowered), default=None)
    is_absolute = path.startswith(("/", "\\")) or path[1:2] == ":"
    if anchor_at is not None:
        tail = parts[anchor_at + 1 :]
        if root is not None:
            return os.path.join(root, *tail), "/".join(tail)
        local = path if is_absolute else os.path.join(base_dir, path)
        return local, "/".join(tail)
    if is_absolute:
        return path, "/".join(p for p in parts if p != "/")
    return os.path.join(root if root is not None else base_dir, *parts), "/".join(parts)


def parse_list_file(
    list_path: str,
    split: str,
    *,
    num_classes: int,
    root: str | None,
    anchors: tuple[str, ...],
) -> tuple[list[ClipSpec], list[BadClip]]:
    """Reads one annotation list.

    Returns:
      (clips, bad): a ClipSpec per well-formed line with an in-range label, and a BadClip (list file and
      line number, reason) per malformed line or out-of-range label.
    """
    clips: list[ClipSpec] = []
    bad: list[BadClip] = []
    base_dir = os.path.dirname(os.path.abspath(list_path))
    with open(list_path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        source = f"{list_path}:{line_no}"
        fields = line.rsplit(maxsplit=2)
        if len(fields) != 3:
            bad.append(BadClip(split, source, line, "malformed line: expected '<frame_dir> <num_frames> <label>'"))
            continue
        path, frames_field, label_field = fields
        try:
            listed_frames, label = int(frames_field), int(label_field)
        except ValueError:
            bad.append(BadClip(split, source, line, "malformed line: frame count and label must be integers"))
            continue
        if not 0 <= label < num_classes:
            bad.append(BadClip(split, source, path, f"label {label} out of range 0..{num_classes - 1}"))
            continue
        local, clip_id = reroot(path, root, anchors, base_dir)
        clips.append(
            ClipSpec(
                path=local,
                label=label,
                clip_id=clip_id,
                split=split,
                source=source,
                kind="frames",
                listed_frames=listed_frames,
            )
        )
    return clips, bad
