r"""Builds ArrayRecord shards of a DFER dataset (DFEW, FERV39k, MAFW, a folder of videos, or SynthFER).

Usage:

  # DFEW fold 3, lists written on another machine (/home/x/DFEW/DFEW_Frame_Face/03271 96 0 ...):
  python -m data_prep.build_dataset --dataset=dfew --root=/data/DFEW --fold=3 \
      --annotations=/data/DFEW/annotation/set_3_train.txt,/data/DFEW/annotation/set_3_test.txt \
      --out=/data/shards/dfew3

  # FERV39k; lists are found in --root (or its subfolders) when --annotations is left out:
  python -m data_prep.build_dataset --dataset=ferv39k --root=/data/FERV39k --out=/data/shards/ferv39k

  # MAFW fold 1 with per-clip captions (JSON object or CSV/TSV clip_id,text) for CATE:
  python -m data_prep.build_dataset --dataset=mafw --root=/data/MAFW --fold=1 \
      --captions=/data/MAFW/captions.tsv --out=/data/shards/mafw1

  # Your own videos (mp4/avi/mov/mkv/webm) with CSVs `path,label[,caption]`, paths relative to --videos,
  # cropped to the face (clips without one are reported in bad_clips.tsv). The classes are the
  # distinct label names of the CSVs, sorted, or --class_names=calm,tense,happy (label i = name i):
  python -m data_prep.build_dataset --dataset=folder --videos=/data/myclips --face_crop=auto \
      --labels=train=/data/myclips/train.csv,test=/data/myclips/test.csv --out=/data/shards/mine

  # Check a dataset (a copy from another machine): every record readable, counts as in its manifest:
  python -m data_prep.build_dataset --verify --out=/data/shards/dfew3

  # SynthFER, the synthetic dataset of the demo and the tests:
  python -m data_prep.build_dataset --dataset=synth --synth_train=2100 --synth_test=700 --out=/tmp/synthfer
  # ... its hard variant (camera shake, crop jumps, talking, lighting flashes on top):
  python -m data_prep.build_dataset --dataset=synth --synth_variant=hard --out=/tmp/synthfer_hard
  # ... plus one test clip per class as mp4 (examples/000000_happiness.mp4, ...) to try predict on:
  python -m data_prep.build_dataset --dataset=synth --synth_examples=1 --out=/tmp/synthfer

The output folder holds `<split>-00000-of-000NN.array_record` shards, `manifest.json` and
`bad_clips.tsv`. It appears only when the job succeeds; an existing output is never mixed with new
shards (the job refuses, or replaces it as a whole with --overwrite).
"""

from __future__ import annotations

import os

from absl import app, flags

from data_prep import job, synth, verify
from grace_jax.infra import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, list(job.DATASETS), "Which dataset to build.")
flags.DEFINE_list("annotations", [], "List files `<frame_dir> <num_frames> <label>`, as `path` or `split=path`.")
flags.DEFINE_string("root", None, "Dataset folder on this machine; list paths are re-rooted onto it.")
flags.DEFINE_integer("fold", None, "DFEW/MAFW fold (1..5): keeps the `set_<fold>` lists.")
flags.DEFINE_string("videos", None, "--dataset=folder: folder the CSV paths are relative to.")
flags.DEFINE_list("labels", [], "--dataset=folder: CSVs `path,label[,caption]`, as `path` or `split=path`.")
flags.DEFINE_list(
    "class_names",
    [],
    "--dataset=folder: the classes in label order (a CSV label is an index "
    "into them or one of them); default: the CSVs' distinct label names, sorted.",
)
flags.DEFINE_string("captions", None, "Clip id -> caption file (JSON object, or CSV/TSV `clip_id,text`).")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 picks about one shard per 500 clips.")
flags.DEFINE_integer("frame_size", 0, "Stored square frame side; 0 means 224 (48 for synth).")
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of stored frames.")
flags.DEFINE_integer("workers", os.cpu_count() or 1, "Worker processes reading and encoding clips.")
flags.DEFINE_float("max_bad_fraction", 0.05, "Fail when more than this fraction of listed clips is bad.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output folder as a whole.")
flags.DEFINE_enum(
    "face_crop",
    "none",
    ["auto", "none"],
    "auto: crop videos and frame folders to the face found in their frames (BlazeFace, as "
    "grace_jax.predict --face_crop=auto); clips without a face go to bad_clips.tsv. none: "
    "the frames as they are (the datasets' own face crops).",
)
flags.DEFINE_float(
    "min_face_fraction", 0.25, "With --face_crop=auto: a clip with a face in fewer of its frames is bad ('no face')."
)
flags.DEFINE_integer("synth_train", 2100, "SynthFER: train clips.")
flags.DEFINE_integer("synth_test", 700, "SynthFER: test clips.")
flags.DEFINE_integer("synth_seed", 0, "SynthFER: seed.")
flags.DEFINE_integer("synth_min_frames", 12, "SynthFER: fewest frames per clip.")
flags.DEFINE_integer("synth_max_frames", 24, "SynthFER: most frames per clip.")
flags.DEFINE_enum(
    "synth_variant",
    "standard",
    list(synth.VARIANTS),
    "SynthFER: standard, or hard: stronger "
    "class-irrelevant motion (camera shake, face-crop jumps, talking, lighting flashes).",
)
flags.DEFINE_bool(
    "synth_ground_truth",
    True,
    "SynthFER: test records also carry each clip rendered with the "
    "expression only and with the distractors only (PNG frames), the ground truth of where the "
    "expression is; train records never do.",
)
flags.DEFINE_integer(
    "synth_examples",
    0,
    "SynthFER: also write this many test clips per class as mp4 files "
    "under <out>/examples/ (<index>_<class>.mp4), to try grace_jax.predict on.",
)
flags.DEFINE_float(
    "val_fraction",
    0.0,
    "Hold this share of each class's train clips out as split `val` "
    "(seeded by --synth_seed), for selecting checkpoints without the test fold "
    "(grace_jax.kfold --select_on=val).",
)
flags.DEFINE_bool(
    "verify",
    False,
    "Build nothing: read back every record of the dataset at --out and compare the counts with its "
    "manifest.json (a copy checked after a transfer); exit 1 naming each damaged shard.",
)
flags.mark_flags_as_required(["out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.verify:
        verify.verify(FLAGS.out)
        return
    if FLAGS.dataset is None:
        raise app.UsageError("--dataset is required (--helpshort lists the flags).")
    config = job.BuildConfig(
        dataset=FLAGS.dataset,
        out=FLAGS.out,
        annotations=tuple(FLAGS.annotations),
        root=FLAGS.root,
        fold=FLAGS.fold,
        videos=FLAGS.videos,
        labels=tuple(FLAGS.labels),
        class_names=tuple(FLAGS.class_names),
        captions=FLAGS.captions,
        num_shards=FLAGS.num_shards,
        frame_size=FLAGS.frame_size,
        jpeg_quality=FLAGS.jpeg_quality,
        workers=FLAGS.workers,
        max_bad_fraction=FLAGS.max_bad_fraction,
        overwrite=FLAGS.overwrite,
        synth_train=FLAGS.synth_train,
        synth_test=FLAGS.synth_test,
        synth_seed=FLAGS.synth_seed,
        synth_min_frames=FLAGS.synth_min_frames,
        synth_max_frames=FLAGS.synth_max_frames,
        synth_variant=FLAGS.synth_variant,
        synth_ground_truth=FLAGS.synth_ground_truth,
        synth_examples=FLAGS.synth_examples,
        face_crop=FLAGS.face_crop,
        min_face_fraction=FLAGS.min_face_fraction,
        val_fraction=FLAGS.val_fraction,
    )
    manifest = job.build(config)  # its errors name the flag or file; cli.run prints them as one line
    counts = ", ".join(f"{s}: {v['num_clips']} clips" for s, v in manifest["splits"].items())
    mismatches = manifest.get("num_frame_count_mismatches", 0)
    fixed = f", {mismatches} listed frame counts corrected" if mismatches else ""
    print(
        f"wrote {config.out} ({counts}; {manifest['num_bad_clips']} bad clips{fixed}, "
        f"see {manifest['bad_clip_report']})"
    )
    print(
        f"{manifest['num_classes']} classes (from {manifest['class_names_source']}): "
        + ", ".join(f"{i} {n}" for i, n in enumerate(manifest["class_names"]))
    )
    print(f"frames: {manifest['frame_source']['description']}")
    check = manifest.get("published_counts")
    if check:
        for line in check["differences"] or [f"clip counts match the published ones ({check['published']})"]:
            print(f"clip count: {line}")


if __name__ == "__main__":
    cli.run(main)
