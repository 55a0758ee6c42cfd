"""rft-fast: fast, trustworthy adversarially robust fine-tuning of vision backbones."""

import torch  # noqa: F401  (loads libtorch before the optional extension rft_fast._C links against it)

__version__ = "0.1.0"
