"""`python -m iqalib run` / `table`: every argument checked before work starts, one-line errors
with the fix, a non-zero exit status when nothing was produced, every flag documented."""
from __future__ import annotations

import _grid_toys as toys
import pytest
from conftest import ToySharpness

from iqalib.cli import main
from iqalib.errors import MissingWeightsError
from iqalib.evaluate import cli, grid
from iqalib.registry import ATTACKS, METRICS


def _register():
    if "toy-cli-metric" not in METRICS:
        METRICS.add("toy-cli-metric", ToySharpness)
    if "toy-cli-sign" not in ATTACKS:
        ATTACKS.add("toy-cli-sign", toys.SignAttack)
    if "toy-cli-broken" not in METRICS:
        def broken():
            raise MissingWeightsError("toy-cli-broken: run `make weights WEIGHTS=toy-cli-broken`")

        METRICS.add("toy-cli-broken", broken)


@pytest.fixture
def mini(monkeypatch, photos64):
    _register()
    monkeypatch.setattr(grid, "_load_dataset_cached",
                        lambda name, n, size: grid.TensorImages(photos64[:n or 3], name=name))


def _run(capsys, *args):
    try:
        rc = main(["run", *args])
    except SystemExit as exc:  # argparse's own exits (bad types, --help)
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["--chunk-size", "0"], "--chunk-size must be at least 1"),
    (["--batch-size", "-2"], "--batch-size must be at least 1"),
    (["--n", "zero"], "--n must be a whole number"),
    (["--metrics", "brisqe"], "Did you mean 'brisque'"),
    (["--attacks", "ifgms"], "Did you mean 'ifgsm'"),
    (["--defenses", "jpeg:q33"], "Did you mean 'q30'"),
    (["--defenses", "flip+jpg"], "Did you mean 'jpeg'"),
    (["--images", "sampels"], "Did you mean 'samples'"),
    (["--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
])
def test_mistakes_stop_before_any_work(tmp_path, capsys, args, says):
    base = {"--metrics": "brisque", "--attacks": "ifgsm", "--out": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    rc, _out, err = _run(capsys, *[x for kv in base.items() for x in kv])
    assert rc == 2
    assert says in _one_line_error(err)
    assert not (tmp_path / "out").exists()  # nothing was started


def test_an_unwritable_run_folder_is_refused_up_front(tmp_path, capsys, mini):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc, _, err = _run(capsys, "--metrics", "toy-cli-metric", "--attacks", "toy-cli-sign",
                      "--images", "mini", "--out", str(blocker / "out"))
    assert rc == 2 and "cannot write the run folder" in _one_line_error(err)


def test_a_run_that_produces_nothing_exits_non_zero(tmp_path, capsys, mini):
    rc, _out, err = _run(capsys, "--metrics", "toy-cli-broken", "--attacks", "toy-cli-sign",
                         "--images", "mini", "--out", str(tmp_path / "out"),
                         "--cache", str(tmp_path / "adv"))
    assert rc == 1
    assert "make weights WEIGHTS=toy-cli-broken" in err and "no rows were produced" in err


def test_run_and_table_work_and_every_flag_is_documented(tmp_path, capsys, mini):
    rc, out, _err = _run(capsys, "--metrics", "toy-cli-metric", "--attacks", "toy-cli-sign",
                         "--defenses", "none", "flip", "--images", "mini", "--n", "2",
                         "--chunk-size", "1", "--out", str(tmp_path / "out"),
                         "--cache", str(tmp_path / "adv"))
    assert rc == 0 and "4 rows" in out
    assert main(["table", str(tmp_path / "out"), "--by", "attack"]) == 0
    assert main(["table", str(tmp_path / "nothing")]) == 2
    for parser in (cli.run_parser(), cli.table_parser()):
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.option_strings or action.dest} has no help"
