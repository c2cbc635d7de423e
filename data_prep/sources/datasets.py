"""Where each dataset's lists live, which split and fold a list belongs to, video CSVs, and captions."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re

from data_prep.sources.annotations import parse_list_file
from data_prep.sources.clip_spec import BadClip, ClipSpec
from grace_jax.data.video import VIDEO_EXTENSIONS
from grace_jax.infra.errors import UserError

# The dataset's own folder name(s); a list path is re-rooted from the component after it.
ANCHORS = {"dfew": ("DFEW",), "ferv39k": ("FERV39k",), "mafw": ("MAFW",), "folder": ()}
FOLDED = ("dfew", "mafw")


class SourceError(UserError):
    """The inputs named on the command line cannot be used at all (missing list, no fold, ...)."""


def split_of(list_path: str) -> str:
    """Split name from a list's file name: `set_1_train.txt` -> train, `FERV39k_test.txt` -> test."""
    stem = os.path.splitext(os.path.basename(list_path))[0].lower()
    for split, words in (("train", ("train",)), ("test", ("test",)), ("val", ("val", "dev"))):
        if any(w in stem for w in words):
            return split
    return re.sub(r"[^a-z0-9_]+", "_", stem)


def parse_split_paths(values: list[str]) -> list[tuple[str, str]]:
    """`["train=a.txt", "b_test.txt"]` -> [("train", "a.txt"), ("test", "b_test.txt")]."""
    out = []
    for value in values:
        split, sep, path = value.partition("=")
        out.append((split, path) if sep and split and os.sep not in split else (split_of(value), value))
    return out


def _fold_of(list_path: str) -> int | None:
    match = re.search(r"set[_-]?(\d+)", os.path.basename(list_path).lower())
    return int(match.group(1)) if match else None


def find_lists(dataset: str, root: str | None, annotations: list[str], fold: int | None) -> list[tuple[str, str]]:
    """The (split, list file) pairs to build.

    Explicit `annotations` win; otherwise `*.txt` lists naming train/test are looked for in `root` and
    its direct subfolders. For DFEW and MAFW, `fold` keeps only the `set_<fold>` lists.
    """
    if annotations:
        lists = parse_split_paths(annotations)
    else:
        if root is None:
            raise SourceError(f"--dataset={dataset} needs --annotations or a --root that holds the list files")
        lists = []
        folders = [root] + sorted(
            os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
        )
        for folder in folders:
            for name in sorted(os.listdir(folder)):
                if name.endswith(".txt") and split_of(name) in ("train", "test", "val"):
                    lists.append((split_of(name), os.path.join(folder, name)))
        if not lists:
            raise SourceError(
                f"no annotation lists (*train*.txt, *test*.txt) found in {root} or its subfolders; pass --annotations"
            )
    if dataset in FOLDED and fold is not None:
        lists = [(s, p) for s, p in lists if _fold_of(p) == fold]
        if not lists:
            raise SourceError(f"no list for fold {fold} (a file name containing set_{fold}) among the annotation lists")
    elif dataset in FOLDED and len({_fold_of(p) for _, p in lists}) > 1:
        raise SourceError(f"lists of several {dataset.upper()} folds were found; choose one with --fold=1..5")
    for _, path in lists:
        if not os.path.isfile(path):
            raise SourceError(f"annotation list {path} does not exist")
    splits = [s for s, _ in lists]
    if len(set(splits)) != len(splits):
        raise SourceError(f"two lists map to the same split: {lists}; name them with split=path")
    return lists


def read_lists(dataset, lists, *, num_classes, root) -> tuple[list[ClipSpec], list[BadClip]]:
    """Parses every (split, list) pair; clip ids are re-rooted below the dataset folder."""
    anchors = ANCHORS[dataset] + ((os.path.basename(os.path.normpath(root)),) if root else ())
    clips, bad = [], []
    for split, path in lists:
        c, b = parse_list_file(path, split, num_classes=num_classes, root=root, anchors=anchors)
        clips += c
        bad += b
    return clips, bad


def _csv_rows(csv_path: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a `path,label[,caption]` CSV's clip rows: the header (`path,...`),
    blank lines and `#` comments left out."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    out = []
    for line_no, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if line_no == 1 and row[0].strip().lower() == "path":
            continue
        out.append((line_no, row))
    return out


def _is_index(label: str) -> bool:
    return label.lstrip("-").isdigit()


def csv_label_names(csv_paths: list[str]) -> list[str] | None:
    """The distinct class names the CSVs' label column uses, sorted (case-insensitively; names that
    differ only in case are one class, spelt as first seen); None when a label is an integer, which
    indexes a class list given elsewhere. Malformed rows are left to read_video_csv to report."""
    names: dict[str, str] = {}
    for csv_path in csv_paths:
        for _, row in _csv_rows(csv_path):
            if len(row) not in (2, 3) or not row[1].strip():
                continue
            label = row[1].strip()
            if _is_index(label):
                return None
            names.setdefault(label.lower(), label)
    return [names[k] for k in sorted(names)]


def read_video_csv(csv_path: str, split: str, videos_dir: str, class_names: tuple[str, ...]):
    """Reads a `path,label[,caption]` CSV (header optional; label as index or class name).

    Paths are relative to `videos_dir`; a path to a folder is read as a frame folder.

    Returns:
      (clips, bad) as parse_list_file does.
    """
    lookup = {name.lower(): i for i, name in enumerate(class_names)}
    clips, bad = [], []
    for line_no, row in _csv_rows(csv_path):
        source = f"{csv_path}:{line_no}"
        if len(row) not in (2, 3):
            bad.append(BadClip(split, source, ",".join(row), "malformed line: expected 'path,label[,caption]'"))
            continue
        rel, label_field = row[0].strip(), row[1].strip()
        label = int(label_field) if _is_index(label_field) else lookup.get(label_field.lower())
        if label is None or not 0 <= label < len(class_names):
            bad.append(
                BadClip(
                    split,
                    source,
                    rel,
                    f"label {label_field!r} is not a class index 0..{len(class_names) - 1} or class name",
                )
            )
            continue
        path = rel if os.path.isabs(rel) else os.path.join(videos_dir, rel)
        kind = "frames" if os.path.isdir(path) else "video"
        if kind == "video" and not path.lower().endswith(VIDEO_EXTENSIONS):
            bad.append(BadClip(split, source, path, "not a video file (extension) nor a frame folder"))
            continue
        caption = row[2].strip() if len(row) == 3 and row[2].strip() else None
        clip_id = os.path.splitext(rel.replace("\\", "/"))[0]
        clips.append(
            ClipSpec(path=path, label=label, clip_id=clip_id, split=split, source=source, kind=kind, caption=caption)
        )
    return clips, bad


def load_captions(path: str) -> dict[str, str]:
    """Clip id -> caption from a JSON object, or from CSV/TSV lines `clip_id,text` (header optional)."""
    if path.lower().endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise SourceError(f"captions file {path} must hold a JSON object clip_id -> text")
        return {str(k): str(v) for k, v in data.items()}
    delimiter = "\t" if path.lower().endswith((".tsv", ".txt")) else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r]
    if rows and rows[0][0].strip().lower() in ("clip_id", "id", "video", "clip"):
        rows = rows[1:]
    bad_rows = [i for i, r in enumerate(rows, start=1) if len(r) < 2]
    if bad_rows:
        raise SourceError(f"captions file {path}: row {bad_rows[0]} lacks a caption column")
    return {r[0].strip(): delimiter.join(r[1:]).strip() for r in rows}


def attach_captions(clips: list[ClipSpec], captions: dict[str, str]) -> list[ClipSpec]:
    """Sets each clip's caption from `captions`, keyed by clip id or by its last path component."""
    out = []
    for c in clips:
        text = captions.get(c.clip_id, captions.get(c.clip_id.rsplit("/", 1)[-1]))
        out.append(dataclasses.replace(c, caption=text) if text is not None else c)
    return out
