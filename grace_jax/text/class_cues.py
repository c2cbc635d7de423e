"""Class names (coarse text) and facial-action cue descriptions (fine text) for CATE.

GRACE's CATE builds emotion-aware text at two grains (docs/model.md). The paper's generated
descriptions are not public, so the fine cues here are written from the Facial Action Coding System:
each sentence spells out, in plain words CLIP's text encoder has seen, the action units (AUs) that the
FACS/EMFACS literature associates with the emotion (Ekman & Friesen's prototypes for the six basic
emotions and contempt; for MAFW's compound classes, the AU combinations reported for them in the DFER
and affective-computing literature). The AU numbers are kept in ``action_units`` for reference only;
the text never contains them, because CLIP has no notion of "AU12".

Each cue is a plain description of how the face looks (written for this project; facts from FACS), so it also serves
as the coarse prompt's text after the learnable contexts with ``config.model.prompt.text="cue"``, the
form of DFER-CLIP's class-descriptor prompts (its own sentences are not reproduced here; pass them
through ``config.model.class_cues`` to train with them verbatim).

Class order is the datasets' label order: DFEW and FERV39k use the first 7, MAFW all 11. Users replace
any name or cue through ``config.model.class_names`` / ``config.model.class_cues``. A label set of
one's own (``data_prep --dataset=folder``, any class count but 7 and 11, or its names filled in by
the trainer from the data's manifest: ``grace_jax.text.class_set``) gives a class named like a built-in one
that one's cue, and any other class ``default_cue(name)``: "a face with a <name> expression.".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from grace_jax.infra.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ClassCue:
    name: str  # coarse class name, as it goes into the learnable prompt
    cue: str  # fine description of the facial actions
    action_units: tuple[int, ...]  # FACS AUs the cue describes (documentation only)


CLASS_CUES: tuple[ClassCue, ...] = (
    ClassCue(
        "happiness",
        "cheeks raised and lip corners pulled up and back into a smile, lower eyelids pushed up "
        "with crow's feet wrinkles at the outer eye corners, lips often parted.",
        (6, 12, 25),
    ),
    ClassCue(
        "sadness",
        "inner corners of the eyebrows raised and drawn together, lip corners pulled down, chin "
        "pushed up so the lower lip pouts, upper eyelids drooping.",
        (1, 4, 15, 17),
    ),
    ClassCue(
        "neutral",
        "a relaxed face with no muscle tension, eyebrows level, eyes open normally, lips closed "
        "and resting, no wrinkles around the eyes or mouth.",
        (),
    ),
    ClassCue(
        "anger",
        "eyebrows lowered and pulled together into a frown, upper eyelids raised in a hard glare, "
        "lower eyelids tensed, lips pressed tightly together or narrowed.",
        (4, 5, 7, 23, 24),
    ),
    ClassCue(
        "surprise",
        "whole eyebrows raised high and curved, eyes opened wide with the upper eyelids lifted, "
        "jaw dropped so the mouth falls open.",
        (1, 2, 5, 26),
    ),
    ClassCue(
        "disgust",
        "nose wrinkled, upper lip raised, lower lip pulled down, eyebrows lowered and cheeks "
        "pushed up toward the eyes.",
        (9, 10, 15, 16),
    ),
    ClassCue(
        "fear",
        "eyebrows raised and pulled together, upper eyelids raised and lower eyelids tense, lips "
        "stretched sideways toward the ears, mouth slightly open.",
        (1, 2, 4, 5, 7, 20, 26),
    ),
    ClassCue(
        "contempt",
        "one lip corner tightened and raised on only one side of the face, a one-sided dimple, "
        "a slight sneer with the head tilted back.",
        (12, 14),
    ),
    ClassCue(
        "anxiety",
        "worried eyebrows with the inner corners raised and drawn together, tense eyelids, lips "
        "pressed or bitten, eyes darting and blinking often.",
        (1, 4, 7, 24, 28),
    ),
    ClassCue(
        "helplessness",
        "inner eyebrows raised, lip corners turned down, eyelids drooping, gaze and head "
        "lowered, a slack and resigned face.",
        (1, 15, 41, 54, 64),
    ),
    ClassCue(
        "disappointment",
        "lip corners pulled down, chin raised with the lips pressed together, eyebrows slightly "
        "lowered, gaze dropping away.",
        (4, 15, 17, 24, 64),
    ),
)

NUM_BASIC = 7  # DFEW, FERV39k
NUM_MAFW = 11
BUILTIN_ORDERS = (NUM_BASIC, NUM_MAFW)  # class counts whose label order is a dataset's (by position)


def default_cue(name: str) -> str:
    """The fine text of a class with no built-in cue: its name in a sentence about a face. CATE and
    `prompt.text="cue"` then read the name itself; `model.class_cues` gives better sentences."""
    return f"a face with a {name.replace('_', ' ').strip()} expression."


def cue_for_name(name: str) -> ClassCue:
    """The built-in class of that name (any case), else `name` with `default_cue(name)`."""
    for base in CLASS_CUES:
        if base.name == name.lower():
            return dataclasses.replace(base, name=name)
    return ClassCue(name, default_cue(name), ())


def class_cues(
    num_classes: int,
    names: Sequence[str] | None = None,
    cues: Sequence[str] | None = None,
) -> tuple[ClassCue, ...]:
    """The class texts of a label set, with optional per-class overrides.

    With 7 (DFEW, FERV39k) or 11 (MAFW) classes, class i is built-in class i and an override replaces
    only what it gives: a new name keeps that position's cue (renaming a dataset's class). With any
    other count, a named class takes the cue of the built-in class of that name, else
    `default_cue(name)`; an unnamed one (no names, or "") is built-in class i, for i < 11.

    Args:
      num_classes: the class count.
      names: replaces the class names when non-empty (length ``num_classes``); an empty string
        keeps that class's built-in name.
      cues: replaces the cue sentences likewise.
    """
    names = list(names or ())
    cues = list(cues or ())
    for what, values in (("class_names", names), ("class_cues", cues)):
        if values and len(values) != num_classes:
            raise ConfigError(f"model.{what} has {len(values)} entries but model.num_classes is {num_classes}")
    if num_classes == 0:
        raise ConfigError(
            "model.num_classes=0 (the data's class count) is filled in by the trainer from the data; "
            "set a count to build a model outside training"
        )
    if num_classes < 0:
        raise ConfigError(f"model.num_classes={num_classes}: a label set has at least one class")
    out = []
    for i in range(num_classes):
        name = names[i] if names and names[i] else ""
        if num_classes in BUILTIN_ORDERS or not name:
            if i >= len(CLASS_CUES):
                raise ConfigError(
                    f"model.num_classes={num_classes}: built-in classes cover 1..{len(CLASS_CUES)}; name "
                    f"class {i} (and every class past {len(CLASS_CUES) - 1}) in model.class_names"
                )
            base = CLASS_CUES[i]
            base = dataclasses.replace(base, name=name or base.name)
        else:
            base = cue_for_name(name)
        out.append(dataclasses.replace(base, cue=cues[i]) if cues and cues[i] else base)
    return tuple(out)
