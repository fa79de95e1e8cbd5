"""What normalization does to training, measured on real data shipped inside a package
(scikit-learn's handwritten digits: 1797 8x8 images, 10 classes), with normgen's modules.

Three experiments, each writing a CSV of per-epoch results and a PNG plot:

* ``norms``: the same MLP trained with Adam without normalization and with BatchNorm,
  LayerNorm, GroupNorm and RMSNorm: loss and test accuracy per epoch.
* ``batch_size``: BatchNorm vs GroupNorm vs LayerNorm at batch sizes 2 ... 64, the same
  number of epochs each: BatchNorm's batch statistics get noisy at small batches.
* ``inference_stats``: a BatchNorm model evaluated with its running statistics (eval
  mode) and with the statistics of each test batch, per epoch and test batch size.

Run ``python -m normgen.experiments [--quick] [--out DIR] [EXPERIMENT ...]``.
"""
from .digits import EXPERIMENTS, load_digits_split, main, run

__all__ = ["EXPERIMENTS", "load_digits_split", "main", "run"]
