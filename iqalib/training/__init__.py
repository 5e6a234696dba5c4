"""Training pipelines, kept apart from the models they train.

- :mod:`iqalib.training.learned_metric`: ``effnet-iqa``'s quality head on pseudo-MOS
  (``python -m iqalib.training.learned_metric``).
- :mod:`iqalib.training.fcn_filter`: the FCN filter against AdvCF, as the authors trained it
  (paper profile) and the shipped offline filter (``python -m iqalib.training.fcn_filter``).
- :mod:`iqalib.training.data`: the offline photos both draw from.

Submodules are imported on demand (``from iqalib.training import fcn_filter``): importing
this package loads nothing heavy.
"""
