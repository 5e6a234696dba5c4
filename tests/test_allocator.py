"""iqalib.allocator: glibc keeps freed tensor memory instead of faulting it in again."""
import os
import subprocess
import sys
import textwrap

import pytest

from iqalib import allocator

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or
                                os.environ.get("IQALIB_MALLOC") == "system",
                                reason="the settings are glibc's (Linux) and on by default")

# a small conv net's forward + backward in a thread (as a Dask task runs): page faults of the
# timed passes, after three warm-up passes
_PROBE = textwrap.dedent("""
    import resource, threading, torch, iqalib
    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1))
    x = torch.rand(2, 3, 128, 128)
    out = {}
    def work():
        for _ in range(3):
            net(x.requires_grad_(True)).sum().backward()
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            net(x.requires_grad_(True)).sum().backward()
        out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    t = threading.Thread(target=work); t.start(); t.join()
    print(out["faults"], iqalib.allocator.tune_malloc())
""")


def _probe(**env) -> tuple[int, bool]:
    res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300, check=True)
    faults, applied = res.stdout.split()[-2:]
    return int(faults), applied == "True"


@glibc_only
def test_import_tunes_glibc_and_the_passes_stop_faulting():
    tuned, applied = _probe()
    system, not_applied = _probe(IQALIB_MALLOC="system")
    assert applied and not not_applied
    # glibc's defaults return the freed blocks and fault them in again on every pass
    assert system > 10_000, system
    assert tuned < system / 20, (tuned, system)


@glibc_only
def test_tuning_is_applied_once_in_this_process():
    assert allocator.tune_malloc() is True
    assert allocator.tune_malloc() is True
