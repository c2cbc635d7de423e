"""Where a dataset's frames came from and how its clip counts compare with the published ones: what the
manifest records as `frame_source` and `published_counts` (docs/data.md, provenance)."""

from __future__ import annotations

import os

from data_prep.sources.clip_spec import ClipSpec

# Labelled clips the datasets' papers publish (docs/data.md): DFEW's and MAFW's 5 folds each
# split all of them into train + test; FERV39k has one split.
PUBLISHED_COUNTS = {
    "dfew": {"train+test": 11697},
    "ferv39k": {"train": 31088, "test": 7847},
    "mafw": {"train+test": 9172},
}
# Frame folders the datasets ship (their official face frames); anything else is someone's own crops.
OFFICIAL_FRAME_FOLDERS = {
    "dfew": ("clip_224x224_16f", "clip_224x224"),
    "ferv39k": ("2_ClipsforFaceCrop",),
    "mafw": ("faces",),
}


def frame_source(dataset: str, face_crop: str, clips: list[ClipSpec]) -> dict:
    """What the frames were read from, for the manifest (and every result that cites the data):
    generated, videos, the dataset's official face frames, or a folder of one's own crops."""
    if dataset == "synth":
        return {"kind": "generated", "description": "SynthFER, generated"}
    parents = sorted({os.path.dirname(os.path.normpath(c.path)) for c in clips})
    common = os.path.commonpath(parents) if parents else ""
    kind = "videos" if dataset == "folder" else "frame folders"
    official = OFFICIAL_FRAME_FOLDERS.get(dataset, ())
    parts = set(os.path.normpath(common).split(os.sep)) if common else set()
    found = [f for f in official if f in parts]
    if face_crop == "auto":
        description = f"own face crops (data_prep --face_crop=auto) of the {kind} under {common}"
    elif dataset == "folder":
        description = f"videos under {common}, frames as they are"
    elif found:
        description = f"{dataset}'s official face frames ({found[0]}) under {common}"
    else:
        description = (
            f"frame folders under {common}: not one of {dataset}'s official face-frame "
            f"folders ({', '.join(official)}), so one's own crops"
        )
    return {
        "kind": kind,
        "folder": common,
        "official": bool(found) and face_crop != "auto",
        "face_crop": face_crop,
        "description": description,
    }


def published_check(dataset: str, written: dict[str, int], listed: dict[str, int], bad: dict[str, int]) -> dict | None:
    """Each split's clip count against the published one: {"published", "written", "differences"}
    with one sentence per difference (None for datasets without published counts)."""
    published = PUBLISHED_COUNTS.get(dataset)
    if published is None:
        return None
    differences = []
    for name, expected in published.items():
        splits = name.split("+") + (["val"] if "train" in name.split("+") else [])  # val is held out of train
        got = sum(written.get(s, 0) for s in splits)
        if got == expected:
            continue
        listed_n = sum(listed.get(s, 0) for s in splits)
        bad_n = sum(bad.get(s, 0) for s in splits)
        differences.append(
            f"{name}: {got:,} clips written, {dataset} publishes {expected:,} ({got - expected:+,}; the lists "
            f"gave {listed_n:,}, {bad_n:,} of them unreadable)"
        )
    return {"published": published, "written": dict(written), "differences": differences}
