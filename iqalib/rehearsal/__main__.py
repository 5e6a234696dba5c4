"""``python -m iqalib.rehearsal``: see :mod:`iqalib.rehearsal.run`."""
import sys

from .run import main

sys.exit(main())
