"""Training and evaluation input pipelines (Grain) for dada-jax.

  common      DataError, Problem, finding the images under a folder
  sources     random-access image sources (folders, .flist files, TFDS,
              synthetic) and `check_sources` validation
  builtin     clean photos that ship inside pip wheels
  simulated   degraded copies of a clean source (degrade, camera: the
              degradations)
  rendered    native-resolution windows rendered so that only the
              degradation differs between domains (the sim2real benchmark)
  build       `build_source`: the source of a config's data stream
  transforms  crop, 8-way augmentation, float conversion, online AWGN
  pipeline    `make_train_iterator` / `make_eval_iterator`

Modules here import each other by submodule, never this package, so that
importing any of them does not depend on the order of the lines below.
"""

from dada_jax.data.build import build_source
from dada_jax.data.common import DataError
from dada_jax.data.pipeline import make_eval_dataset
from dada_jax.data.pipeline import make_eval_iterator
from dada_jax.data.pipeline import make_train_dataset
from dada_jax.data.pipeline import make_train_iterator
from dada_jax.data.sources import check_sources
from dada_jax.data.sources import FlistSource
from dada_jax.data.sources import ImageFolder
from dada_jax.data.sources import PairedFlists
from dada_jax.data.sources import PairedFolders
from dada_jax.data.sources import SyntheticClean
from dada_jax.data.sources import TfdsSource
