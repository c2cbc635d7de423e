"""FERV39k as a TFDS dataset: `ferv39k` (7 classes; one train and one test split)."""

from __future__ import annotations

from data_prep.tfds_builders.clip_builder import ClipBuilder, make_config


class Ferv39k(ClipBuilder):
    """FERV39k (Wang et al., CVPR 2022), from the face-crop clips and its train/test lists."""

    DATASET = "ferv39k"
    HOMEPAGE = "https://wangyanckxx.github.io/Proj_CVPR2022_FERV39k.html"
    BUILDER_CONFIGS = [make_config(None)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    FERV39k is licence-gated: request it from its authors. Pass its folder as manual_dir, holding the
    face-crop frame folders (2_ClipsforFaceCrop/<scene>/<class>/<clip>/...) and the lists whose names
    contain train and test (`<frame_dir> <num_frames> <label>` lines) in it or in a direct subfolder.
    """
