"""The user's online path (``make weights``, ``make data``, the paper profile's notebooks),
rehearsed offline against a local server: ``make rehearse`` (= ``python -m iqalib.rehearsal``).

- :mod:`.server`: an HTTP file server on 127.0.0.1 with Range / ETag / If-Range and switchable
  faults (dropped transfers, changed files), used by the rehearsal and the download tests;
- :mod:`.checkpoints`: stand-in checkpoints in the official on-disk layouts, built from
  iqalib's own architectures with seeded random weights;
- :mod:`.nips17`: a NIPS'17-style ``dev_dataset.csv`` and photos;
- :mod:`.run`: the rehearsal itself (steps, checks, report).
"""
