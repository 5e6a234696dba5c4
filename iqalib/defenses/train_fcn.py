"""``python -m iqalib.defenses.train_fcn``: retrain the shipped FCN filter (see
:func:`iqalib.defenses.fcn.main`). A module of its own so that running it does not import
``fcn`` twice (once as ``__main__``), which would register the purifier twice."""
from __future__ import annotations

from .fcn import main

if __name__ == "__main__":
    raise SystemExit(main())
