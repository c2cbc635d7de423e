"""MAFW as a TFDS dataset: `mafw/fold_1` .. `mafw/fold_5` (11 classes), with per-clip captions."""

from __future__ import annotations

from data_prep.tfds_builders.clip_builder import ClipBuilder, make_config


class Mafw(ClipBuilder):
    """MAFW (Liu et al., ACM MM 2022), from the frame folders, the 5-fold lists and the descriptions.

    The descriptions reach the examples' `caption` through the builder's `captions` argument (a file
    `clip_id,text` / `clip_id<TAB>text` or a JSON object, as `data_prep.build_dataset --captions`).
    """

    DATASET = "mafw"
    HOMEPAGE = "https://mafw-database.github.io/MAFW/"
    BUILDER_CONFIGS = [make_config(fold) for fold in range(1, 6)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    MAFW is licence-gated: request it from its authors. Pass its folder as manual_dir, holding the frame
    folders and the fold lists set_<k>_train.txt / set_<k>_test.txt in it or in a direct subfolder;
    give the per-clip English descriptions as the captions file (--captions).
    """
