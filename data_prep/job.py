"""One build_dataset run: gather clips, read them on all cores, write shards, manifest and report."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import multiprocessing
import os
import shlex
import sys
from collections.abc import Iterator

from tqdm import tqdm

from data_prep import provenance, report, synth, synth_examples
from data_prep.clip_loader import LoadOptions, load_clip
from data_prep.sources.clip_spec import BadClip, ClipSpec
from data_prep.sources.datasets import (
    ANCHORS,
    SourceError,
    attach_captions,
    csv_label_names,
    find_lists,
    load_captions,
    parse_split_paths,
    read_lists,
    read_video_csv,
)
from data_prep.writer import ShardSetWriter, StagingDir, check_output_free, remove_stale_staging, write_json
from grace_jax.data import schema
from grace_jax.infra.errors import UserError

DATASETS = ("dfew", "ferv39k", "mafw", "folder", "synth")
CLIPS_PER_SHARD = 500


class BuildError(UserError):
    """The job failed as a whole (too many bad clips, nothing usable); nothing was written."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """The build_dataset flags; see build_dataset.py for their meaning."""

    dataset: str
    out: str
    annotations: tuple[str, ...] = ()
    root: str | None = None
    fold: int | None = None
    videos: str | None = None
    labels: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()  # --dataset=folder: the classes, label i = class_names[i]
    captions: str | None = None
    num_shards: int = 0
    frame_size: int = 0
    jpeg_quality: int = 95
    workers: int = 1
    max_bad_fraction: float = 0.05
    overwrite: bool = False
    synth_train: int = 2100
    synth_test: int = 700
    synth_seed: int = 0
    synth_min_frames: int = 12
    synth_max_frames: int = 24
    synth_variant: str = "standard"  # synth.VARIANTS
    # Test records also carry the expression-only / distractors-only frames (PNG) for localization.
    synth_ground_truth: bool = True
    # Test clips per class also written as mp4 under examples/ (for trying predict after the demo).
    synth_examples: int = 0
    face_crop: str = "none"
    min_face_fraction: float = 0.25
    val_fraction: float = 0.0  # > 0: that share of each class's train clips becomes split "val"
    command: tuple[str, ...] | None = None  # recorded in the manifest; defaults to sys.argv
    progress: bool = True


def class_names_of(config: BuildConfig) -> tuple[tuple[str, ...], str]:
    """(class names, where they came from) for the manifest; label i is class_names[i].

    The datasets have their own classes. A folder of videos takes --class_names; without it, the
    distinct names in the labels CSVs' label column, sorted; CSVs with integer labels and no
    --class_names index DFEW's 7 classes (happiness=0 ... fear=6), as before the flag existed.
    """
    if config.class_names and config.dataset != "folder":
        raise SourceError(
            f"--class_names is for --dataset=folder; {config.dataset}'s classes are fixed: "
            f"{', '.join(schema.CLASS_NAMES[config.dataset])}"
        )
    if config.dataset != "folder":
        return schema.CLASS_NAMES[config.dataset], config.dataset
    if config.class_names:
        names = tuple(n.strip() for n in config.class_names)
        where = "--class_names"
    else:
        found = csv_label_names([p for _, p in parse_split_paths(list(config.labels))])
        if found is None:
            return schema.CLASS_NAMES["dfew"], "dfew (integer labels without --class_names)"
        names, where = tuple(found), "labels"
    problem = None
    if any(not n for n in names):
        problem = "an empty class name"
    elif len({n.lower() for n in names}) != len(names):
        problem = "a class named twice (names are compared ignoring case)"
    elif any(n.lstrip("-").isdigit() for n in names):
        problem = "a class name that is a number (labels that are numbers are class indices)"
    elif len(names) < 2:
        problem = f"one class only ({names[0] if names else ''}); a classifier needs two or more"
    if problem:
        source = "--class_names" if where == "--class_names" else f"--labels ({', '.join(config.labels)})"
        hint = "" if where == "--class_names" else "; list every class with --class_names=a,b,c"
        raise SourceError(f"{source}: {problem}{hint}")
    return names, where


def gather(config: BuildConfig) -> tuple[list[ClipSpec], list[BadClip]]:
    """All clips the job will read, grouped by split in list order, plus lines rejected while listing."""
    if config.dataset not in DATASETS:
        raise SourceError(f"unknown dataset {config.dataset!r}; choose one of {DATASETS}")
    if config.dataset == "synth":
        clips = [
            ClipSpec(
                path=f"synth:{split}/{i:06d}",
                label=synth.clip_label(i),
                clip_id=f"synth/{split}/{i:06d}",
                split=split,
                source=f"synth:{split}/{i:06d}",
                kind="synth",
            )
            for split, n in (("train", config.synth_train), ("test", config.synth_test))
            for i in range(n)
        ]
        bad: list[BadClip] = []
    elif config.dataset == "folder":
        if not config.videos or not config.labels:
            raise SourceError(
                "--dataset=folder needs --videos (a folder) and --labels (CSV files path,label[,caption])"
            )
        if not os.path.isdir(config.videos):
            raise SourceError(f"--videos folder {config.videos} does not exist")
        clips, bad = [], []
        for _split, csv_path in parse_split_paths(list(config.labels)):
            if not os.path.isfile(csv_path):
                raise SourceError(f"labels CSV {csv_path} does not exist")
        class_names, _ = class_names_of(config)
        for split, csv_path in parse_split_paths(list(config.labels)):
            c, b = read_video_csv(csv_path, split, config.videos, class_names)
            clips += c
            bad += b
    else:
        class_names, _ = class_names_of(config)
        if config.root is not None and not os.path.isdir(config.root):
            raise SourceError(f"--root {config.root} is not a folder")
        lists = find_lists(config.dataset, config.root, list(config.annotations), config.fold)
        clips, bad = read_lists(config.dataset, lists, num_classes=len(class_names), root=config.root)
    if config.captions:
        clips = attach_captions(clips, load_captions(config.captions))
    if config.val_fraction:
        clips = hold_out_validation(clips, config.val_fraction, config.synth_seed)
    return clips, bad


def hold_out_validation(clips: list[ClipSpec], fraction: float, seed: int = 0) -> list[ClipSpec]:
    """Moves `fraction` of each class's train clips (at least one per class that has two) to split
    "val", chosen by a seeded shuffle, so that model selection need never look at the test fold."""
    if not 0 < fraction < 1:
        raise BuildError(f"--val_fraction={fraction}: give a fraction in (0, 1), e.g. 0.1")
    import random

    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        if c.split == "train":
            by_class.setdefault(c.label, []).append(i)
    if not by_class:
        raise BuildError("--val_fraction: the inputs have no train split to hold a validation part out of")
    rng = random.Random(seed)
    moved = set()
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        count = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        moved.update(members[:count])
    return [dataclasses.replace(c, split="val") if i in moved else c for i, c in enumerate(clips)]


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver where possible: forking a process that already runs threads (JAX, a test runner) can
    deadlock. forkserver re-imports the main script in each worker, which a script read from stdin or
    an interactive session does not have; those get fork."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and os.path.exists(main_file):
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("fork")


def load_all(clips: list[ClipSpec], options: LoadOptions, workers: int) -> Iterator[tuple]:
    """load_clip over all clips in order, on `workers` processes (in-process for 1)."""
    load = functools.partial(load_clip, options=options)
    if workers <= 1:
        yield from map(load, clips)
        return
    with _pool_context().Pool(workers) as pool:
        # imap keeps list order, so the same inputs always give the same shards.
        yield from pool.imap(load, clips, chunksize=max(1, min(16, len(clips) // (workers * 8) or 1)))


def _write_clip_table(path: str, rows: list[tuple]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(schema.CLIP_TABLE_COLUMNS) + "\n")
        for index, row in enumerate(rows):
            f.write("\t".join(str(v) for v in (index, *row)) + "\n")


def _split_stats(labels: list[int], lengths: list[int], captions: int, names: list[str], num_classes: int) -> dict:
    return {
        "num_clips": len(labels),
        "num_shards": len(names),
        "files": names,
        "class_counts": [labels.count(c) for c in range(num_classes)],
        "min_frames": min(lengths),
        "max_frames": max(lengths),
        "mean_frames": round(sum(lengths) / len(lengths), 2),
        "num_captions": captions,
    }


def build(config: BuildConfig) -> dict:
    """Runs the job; returns the manifest. Raises BuildError/SourceError/OutputExistsError with a clear message."""
    out = os.path.abspath(config.out)
    remove_stale_staging(out)
    check_output_free(out, config.overwrite)
    clips, bad = gather(config)
    rejected_lines = [b.split for b in bad]  # list lines refused before any clip was read
    total = len(clips) + len(bad)
    if total == 0:
        raise BuildError("the inputs list no clips at all")
    frame_size = config.frame_size or (48 if config.dataset == "synth" else 224)
    if config.synth_examples and (config.dataset != "synth" or frame_size % 2):
        raise BuildError(
            "--synth_examples needs --dataset=synth and an even --frame_size (H.264 4:2:0), got "
            f"--dataset={config.dataset} --frame_size={frame_size}"
        )
    if config.face_crop not in ("auto", "none"):
        raise BuildError(f"--face_crop must be auto or none, got {config.face_crop!r}")
    if config.synth_variant not in synth.VARIANTS:
        raise BuildError(f"--synth_variant must be one of {', '.join(synth.VARIANTS)}, got {config.synth_variant!r}")
    class_names, class_names_source = class_names_of(config)
    splits = list(dict.fromkeys(c.split for c in clips))
    # Ground truth for the test split only: training must never see where the expression is.
    wants_ground_truth = config.dataset == "synth" and config.synth_ground_truth and "test" in splits
    ground_truth_splits = ("test",) if wants_ground_truth else ()
    options = LoadOptions(
        frame_size,
        config.jpeg_quality,
        config.synth_seed,
        config.synth_min_frames,
        config.synth_max_frames,
        config.face_crop,
        config.min_face_fraction,
        synth_variant=config.synth_variant,
        synth_ground_truth_splits=ground_truth_splits,
    )
    listed = {s: sum(c.split == s for c in clips) for s in splits}
    budget = config.max_bad_fraction * total

    def too_many(final: bool) -> BuildError:
        where = f"{len(bad)} of {total} listed clips are bad" + ("" if final else " already")
        hint = ""
        if config.dataset not in ("folder", "synth"):
            # Of every listed clip, not of the bad ones: the job may stop after a few bad clips, and a
            # handful of missing folders among thousands is not a wrong --root.
            missing = sum(not os.path.exists(c.path) for c in clips)
            if 2 * missing > len(clips):
                if config.root is None:
                    hint = (
                        f"\nMost listed folders ({missing} of {len(clips)}) do not exist: if the lists were "
                        "written on another machine, pass --root=<this machine's dataset folder> to re-root "
                        "their paths."
                    )
                else:
                    hint = (
                        f"\nMost listed folders ({missing} of {len(clips)}) do not exist under --root="
                        f"{config.root}: give the folder that holds the dataset on this machine (each listed "
                        f"path is re-rooted from after its {'/'.join(ANCHORS[config.dataset])} folder onto it)."
                    )
        return BuildError(
            f"{where} ({len(bad) / total:.1%}), above --max_bad_fraction={config.max_bad_fraction}; "
            f"nothing was written. First problems:\n{report.summarize(bad)}{hint}"
        )

    if len(bad) > budget:
        raise too_many(final=False)
    staging = StagingDir(out)
    writers: dict[str, ShardSetWriter] = {}
    mismatched: list[BadClip] = []  # kept clips whose list gives a wrong frame count
    try:
        stats = {s: ([], [], 0) for s in splits}
        for s in splits:
            n = config.num_shards or math.ceil(listed[s] / CLIPS_PER_SHARD)
            writers[s] = ShardSetWriter(staging.path, s, max(1, min(n, listed[s])))
        results = load_all(clips, options, config.workers)
        for spec, record, problem, note in tqdm(
            results, total=len(clips), desc=f"{config.dataset} -> {out}", unit="clip", disable=not config.progress
        ):
            if problem is not None:
                bad.append(problem)
                if len(bad) > budget:
                    raise too_many(final=False)
                continue
            if note is not None:
                mismatched.append(note)
            num_frames = schema.parse(record).num_frames
            writers[spec.split].write(record, (spec.clip_id, spec.label, num_frames, int(spec.caption is not None)))
            labels, lengths, captions = stats[spec.split]
            labels.append(spec.label)
            lengths.append(num_frames)
            stats[spec.split] = (labels, lengths, captions + (spec.caption is not None))
        empty = [s for s in splits if not stats[s][0]]
        if empty:
            raise BuildError(f"split(s) {empty} have no readable clip; first problems:\n{report.summarize(bad)}")
        split_info = {}
        for s in splits:
            _write_clip_table(os.path.join(staging.path, schema.clip_table_name(s)), writers[s].clip_table())
            names = writers.pop(s).close()
            split_info[s] = _split_stats(*stats[s], names, len(class_names))
            split_info[s]["clip_table"] = schema.clip_table_name(s)
        examples = (
            synth_examples.write_examples(
                staging.path,
                per_class=config.synth_examples,
                num_test=config.synth_test,
                seed=config.synth_seed,
                config=synth.SynthConfig(
                    frame_size=frame_size,
                    min_frames=config.synth_min_frames,
                    max_frames=config.synth_max_frames,
                    variant=config.synth_variant,
                ),
            )
            if config.synth_examples
            else []
        )
        # Skipped clips first, then the kept clips whose listed frame count was wrong.
        report.write_report(os.path.join(staging.path, schema.BAD_CLIP_REPORT_NAME), bad + mismatched)
        manifest = {
            "format_version": schema.FORMAT_VERSION,
            "dataset": config.dataset,
            "class_names": list(class_names),
            "num_classes": len(class_names),
            "class_names_source": class_names_source,
            "frame_size": frame_size,
            "face_crop": config.face_crop,
            "jpeg_quality": config.jpeg_quality,
            "splits": split_info,
            **({"examples": examples} if examples else {}),
            **(
                {
                    "synth": {
                        "variant": config.synth_variant,
                        "seed": config.synth_seed,
                        "ground_truth_splits": list(ground_truth_splits),
                    }
                }
                if config.dataset == "synth"
                else {}
            ),
            "frame_source": provenance.frame_source(config.dataset, config.face_crop, clips),
            "published_counts": provenance.published_check(
                config.dataset,
                {sp: len(stats[sp][0]) for sp in splits},
                {sp: listed[sp] + rejected_lines.count(sp) for sp in splits},
                {sp: sum(b.split == sp for b in bad) for sp in splits},
            ),
            "num_bad_clips": len(bad),
            "bad_clips_per_split": {s: sum(b.split == s for b in bad) for s in dict.fromkeys(b.split for b in bad)},
            "bad_clip_report": schema.BAD_CLIP_REPORT_NAME,
            # Clips kept with the frames found on disk although their list line gives another count.
            "num_frame_count_mismatches": len(mismatched),
            "frame_count_mismatches_per_split": {
                s: sum(m.split == s for m in mismatched) for s in dict.fromkeys(m.split for m in mismatched)
            },
            "source": {
                "root": config.root,
                "annotations": list(config.annotations),
                "fold": config.fold,
                "videos": config.videos,
                "labels": list(config.labels),
                "captions": config.captions,
                **(
                    {
                        "synth_seed": config.synth_seed,
                        "synth_frames": [config.synth_min_frames, config.synth_max_frames],
                    }
                    if config.dataset == "synth"
                    else {}
                ),
            },
            "command": shlex.join(config.command if config.command is not None else [sys.executable, *sys.argv]),
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        write_json(os.path.join(staging.path, schema.MANIFEST_NAME), manifest)
        staging.commit(config.overwrite)
        return manifest
    except BaseException:
        for w in writers.values():
            w.abort()
        staging.abort()
        raise
