"""Training and evaluation input pipelines (Grain) for dada-jax.

  sources     random-access image sources (folders, .flist files, TFDS,
              synthetic) and `check_sources` validation
  transforms  crop, 8-way augmentation, float conversion, online AWGN
  pipeline    `make_train_iterator` / `make_eval_iterator`
"""

from dada_jax.data.pipeline import make_eval_dataset
from dada_jax.data.pipeline import make_eval_iterator
from dada_jax.data.pipeline import make_train_dataset
from dada_jax.data.pipeline import make_train_iterator
from dada_jax.data.sources import build_source
from dada_jax.data.sources import check_sources
from dada_jax.data.sources import DataError
from dada_jax.data.sources import FlistSource
from dada_jax.data.sources import ImageFolder
from dada_jax.data.sources import PairedFlists
from dada_jax.data.sources import PairedFolders
from dada_jax.data.sources import SyntheticClean
from dada_jax.data.sources import TfdsSource
