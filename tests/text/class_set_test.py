"""The label set of a run: model.num_classes=0 and class names of one's own from the data's manifest."""

import pytest

from grace_jax.configs import base, demo
from grace_jax.infra import errors
from grace_jax.text import class_cues, class_set


def _config(num_classes=0, data_dir="/data/own"):
    c = base.get_config()
    c.model.num_classes = num_classes
    c.data.dir = data_dir
    return c


OWN = {"class_names": ["calm", "happy", "tense"], "num_classes": 3}


def test_count_names_and_cues_come_from_the_manifest():
    config = _config()
    out = class_set.resolve(config, OWN)
    assert out.model.num_classes == 3 and tuple(out.model.class_names) == ("calm", "happy", "tense")
    assert tuple(out.model.class_cues) == (
        "a face with a calm expression.",
        "a face with a happy expression.",
        "a face with a tense expression.",
    )
    assert config.model.num_classes == 0 and tuple(config.model.class_names) == ()  # a copy was changed
    # Cues the config gives are kept; names it gives win over the data's (same count).
    config.model.class_cues = ("still.", "smiling.", "clenched.")
    assert tuple(class_set.resolve(config, OWN).model.class_cues) == ("still.", "smiling.", "clenched.")
    config.model.class_names = ("a", "b", "c")
    assert tuple(class_set.resolve(config, OWN).model.class_names) == ("a", "b", "c")


def test_built_in_names_leave_the_config_as_it_was():
    dfew = {"class_names": [c.name for c in class_cues.class_cues(7)]}
    out = class_set.resolve(_config(), dfew)
    assert out.model.num_classes == 7 and tuple(out.model.class_names) == () == tuple(out.model.class_cues)
    synth = class_set.resolve(_config(data_dir=""), None)  # SynthFER, generated later
    assert synth.model.num_classes == 7 and tuple(synth.model.class_names) == ()
    assert class_set.resolve(demo.get_config(), None).to_dict() == demo.get_config().to_dict()


def test_a_count_that_does_not_match_the_data_names_both():
    with pytest.raises(errors.ConfigError) as e:
        class_set.resolve(_config(7), OWN)
    assert str(e.value) == (
        "/data/own/manifest.json lists 3 classes but model.num_classes is 7 (the data's classes: calm, happy, "
        "tense): set --config.model.num_classes=3 (or 0, the data's count), or point data.dir at the dataset "
        "this config is for."
    )
    with pytest.raises(errors.ConfigError, match="SynthFER .* has 7 classes but model.num_classes is 3"):
        class_set.resolve(_config(3, ""), None)
    with pytest.raises(errors.ConfigError, match="lists no class_names: set --config.model.num_classes"):
        class_set.resolve(_config(), {"splits": {}})
    with pytest.raises(errors.ConfigError, match="model.class_names has 2 entries but model.num_classes is 3"):
        c = _config()
        c.model.class_names = ("a", "b")
        class_set.resolve(c, OWN)
