"""tensorflow-datasets builders of DFEW, FERV39k and MAFW that run without TensorFlow.

Importing this package registers `dfew`, `ferv39k` and `mafw` with tfds. Build with
`python -m data_prep.tfds_builders.build` (the `tfds build` command imports TensorFlow); read with
`tfds.data_source("dfew/fold_3", data_dir=...)` or train with `--config.data.tfds=dfew/fold_3`.
"""

from data_prep.tfds_builders import dfew, ferv39k, mafw  # noqa: F401  (registration)
from data_prep.tfds_builders.dfew import Dfew
from data_prep.tfds_builders.ferv39k import Ferv39k
from data_prep.tfds_builders.mafw import Mafw

BUILDERS = {"dfew": Dfew, "ferv39k": Ferv39k, "mafw": Mafw}
