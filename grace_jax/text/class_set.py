"""A training run's label set: `model.num_classes` and the class names, from the config or the data.

`model.num_classes = 0` (configs/base.py and the ablations; the dataset configs set 7 or 11) means "as
many classes as the data has": the `class_names` of data.dir's manifest (written by data_prep), or
SynthFER's 7 when data.dir is empty and SynthFER is generated. A count the config sets must match the
data's.

The names go into the prompts when the config names no classes (`model.class_names` empty) and the
data's names are not the built-in ones the empty default already gives (DFEW's, MAFW's, SynthFER's):
a folder of one's own videos with classes `calm, happy, tense` trains on prompts saying so, each class
with the cue `class_cues.cue_for_name` gives it (written to `model.class_cues` unless the config sets
cues). The resolved config is what the run's config.json records, so predict, evaluate and export
rebuild the same prompts; datasets with built-in names leave the config as it was (a run made before
this module resumes unchanged).
"""

from __future__ import annotations

import copy

import ml_collections

from grace_jax.data import schema
from grace_jax.infra import errors, paths
from grace_jax.text import class_cues

FROM_DATA = 0  # model.num_classes: take the count from the data


def data_class_names(manifest: dict | None) -> list[str]:
    """The data's class names in label order ([] for a manifest that lists none)."""
    if manifest is None:  # SynthFER, generated under the workdir once the checks pass
        return list(schema.CLASS_NAMES["synth"])
    return [str(n) for n in manifest.get("class_names") or ()]


def _where(config, manifest, data_dir) -> str:
    if manifest is None:
        return "SynthFER (data.dir empty, data.synth_train_clips > 0)"
    if "tfds" in manifest.get("source", {}):
        return f"data.tfds={manifest['source']['tfds']}"
    return paths.join(data_dir or paths.resolve(config.data.dir), schema.MANIFEST_NAME)


def check_count(config: ml_collections.ConfigDict, manifest: dict | None, data_dir: str | None = None) -> int:
    """The run's class count: the config's, checked against the data's, or the data's for 0.
    `data_dir`: where the manifest was read (default: config.data.dir)."""
    names = data_class_names(manifest)
    count = config.model.num_classes
    where = _where(config, manifest, data_dir)
    if count == FROM_DATA:
        if not names:
            raise errors.ConfigError(
                f"model.num_classes=0 takes the class count from the data, but {where} lists no "
                "class_names: set --config.model.num_classes, or rebuild the data with data_prep."
            )
        return len(names)
    if count < 0:
        raise errors.ConfigError(f"model.num_classes={count}: give a class count, or 0 to take the data's.")
    if names and len(names) != count:
        has = "has" if manifest is None else "lists"
        raise errors.ConfigError(
            f"{where} {has} {len(names)} classes but model.num_classes is {count} (the data's classes: "
            f"{', '.join(names)}): set --config.model.num_classes={len(names)} (or 0, the data's count), or "
            "point data.dir at the dataset this config is for."
        )
    return count


def resolve(config: ml_collections.ConfigDict, manifest: dict | None) -> ml_collections.ConfigDict:
    """A copy of `config` whose model.num_classes (and, for a label set of its own, class names and
    cues) are the data's; raises errors.ConfigError when the config's class texts do not fit them."""
    count = check_count(config, manifest)
    names = data_class_names(manifest)
    out = copy.deepcopy(config)
    m = out.model
    m.num_classes = count
    builtin = count <= len(class_cues.CLASS_CUES) and names == [c.name for c in class_cues.class_cues(count)]
    if names and not m.class_names and not builtin and not m.prompt.token_ids:
        m.class_names = tuple(names)
        if not m.class_cues:
            m.class_cues = tuple(class_cues.cue_for_name(n).cue for n in names)
    # The class texts' counts against the class count (one ConfigError naming the field).
    class_cues.class_cues(count, names=list(m.class_names), cues=list(m.class_cues))
    return out
