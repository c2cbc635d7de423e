"""Class cue texts: order, coverage, overrides."""

import pytest

from grace_jax.text import class_cues


def test_label_order_matches_datasets():
    names = [c.name for c in class_cues.class_cues(11)]
    assert names == [
        "happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear",
        "contempt", "anxiety", "helplessness", "disappointment",
    ]  # fmt: skip
    assert [c.name for c in class_cues.class_cues(7)] == names[:7]


def test_cues_are_distinct_plain_sentences():
    cues = [c.cue for c in class_cues.class_cues(11)]
    assert len(set(cues)) == 11
    for c in class_cues.class_cues(11):
        assert "AU" not in c.cue  # CLIP does not know FACS codes; the words carry the cue
        assert 10 < len(c.cue.split()) < 40  # fits CLIP's 77-token context with room to spare
        assert c.name not in c.cue  # the fine text describes actions, not the label


def test_overrides():
    out = class_cues.class_cues(7, names=["joy"] + [""] * 6, cues=None)
    assert out[0].name == "joy" and out[0].cue == class_cues.CLASS_CUES[0].cue
    assert out[1].name == "sadness"  # an empty entry keeps the built-in text
    out = class_cues.class_cues(2, names=["a", "b"], cues=["x y", "z"])
    assert [c.cue for c in out] == ["x y", "z"]
    with pytest.raises(ValueError, match="class_names"):
        class_cues.class_cues(7, names=["a"])
    with pytest.raises(ValueError, match="num_classes=12"):
        class_cues.class_cues(12)


def test_a_label_set_of_its_own_gets_cues_by_name():
    out = class_cues.class_cues(3, names=["calm", "Happiness", "very_tense"])
    assert [c.name for c in out] == ["calm", "Happiness", "very_tense"]
    assert out[0].cue == "a face with a calm expression." and out[0].action_units == ()
    assert out[1].cue == class_cues.CLASS_CUES[0].cue  # a built-in class, wherever it sits
    assert out[2].cue == "a face with a very tense expression."
    assert class_cues.class_cues(3, names=["a", "", "c"])[1].name == "sadness"  # unnamed: built-in 1
    many = class_cues.class_cues(12, names=[f"c{i}" for i in range(12)], cues=[""] * 11 + ["own words"])
    assert many[0].cue == "a face with a c0 expression." and many[11].cue == "own words"
    with pytest.raises(ValueError, match="name class 11"):
        class_cues.class_cues(12, names=[f"c{i}" for i in range(11)] + [""])
    with pytest.raises(ValueError, match="filled in by the trainer"):
        class_cues.class_cues(0)
