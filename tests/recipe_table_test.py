"""The recipe table in each dataset config's docstring says what the configs hold: the GRACE column
is that config's value, the DFER-CLIP column the dferclip ablation's for the same dataset."""

import re

import pytest

from grace_jax.configs import dferclip, dfew, ferv39k, mafw


def _rows(doc: str):
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (
            line.startswith("| ")
            and len(cells) == 4
            and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", cells[0])
            and cells[0] != "field"
        ):
            yield cells


def _get(config, field):
    value = config
    for part in field.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize(
    "module, arg, ablation",
    [(dfew, "fold=2", "dfew,fold=2"), (ferv39k, None, "ferv39k"), (mafw, "fold=1", "mafw,fold=1")],
)
def test_recipe_table_matches_the_configs(module, arg, ablation):
    ours, theirs = module.get_config(arg), dferclip.get_config(ablation)
    rows = list(_rows(module.__doc__))
    assert len(rows) >= 12
    for field, grace, dfer, why in rows:
        assert str(_get(ours, field)) == grace, (module.__name__, field)
        assert str(_get(theirs, field)) == dfer, (module.__name__, field)
        assert (grace == dfer) == why.startswith("same"), (field, "a difference needs its reason")
