"""DFEW as a TFDS dataset: `dfew/fold_1` .. `dfew/fold_5` (7 classes; each fold a train and a test split)."""

from __future__ import annotations

from data_prep.tfds_builders.clip_builder import ClipBuilder, make_config


class Dfew(ClipBuilder):
    """DFEW (Jiang et al., ACM MM 2020), from the face-crop frame folders and the 5-fold lists."""

    DATASET = "dfew"
    HOMEPAGE = "https://dfew-dataset.github.io/"
    BUILDER_CONFIGS = [make_config(fold) for fold in range(1, 6)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    DFEW is licence-gated: request it from its authors. Pass its folder as manual_dir, holding the face
    frames (DFEW_Frame_Face/<clip>/00001.jpg ...) and the fold lists set_<k>_train.txt / set_<k>_test.txt
    (`<frame_dir> <num_frames> <label>` lines; paths written on another machine are re-rooted from the
    DFEW folder on) in it or in a direct subfolder.
    """
