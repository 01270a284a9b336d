"""Progress without a terminal: one line per finished cell, no carriage-return redraws; the closing headline."""

from __future__ import annotations

import io

from click.testing import CliRunner

from robustbench_geo.cli import main
from robustbench_geo.sweep.driver import progress_style
from tests.sweep.conftest import tiny_toml


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_style():
    assert progress_style(True, _Tty()) == "bars"
    assert progress_style(True, io.StringIO()) == "lines"
    assert progress_style(False, _Tty()) == "off"


def test_sweep_log_has_no_redraws(tmp_path, ckpt_cache, mnist_root):
    attacks = '\n[attacks.clean]\nattack = "none"\n\n[attacks.wo]\nattack = "worst_of_k"\nparams = { k = 2 }\ngrid = { max_angle_deg = [10, 30] }\n'
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_toml(tmp_path / "out", cache=ckpt_cache, attacks=attacks))
    res = CliRunner().invoke(main, ["sweep", str(path)])  # CliRunner's streams are not terminals, like a CI log
    assert res.exit_code == 0, res.output
    out = res.output
    assert "\r" not in out and "\x1b[" not in out  # no redrawn bars, no cursor movement
    cell_lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in cell_lines] == ["[1/3", "[2/3", "[3/3"]
    assert all("(n=60)" in line and "robust" in line and "%" in line for line in cell_lines)
    head = out.split("headline (95 % intervals in brackets; details in the report):", 1)
    assert len(head) == 2 and "cnn" in head[1] and "worst_of_k" not in head[1].split("\n")[0]
    assert "wo on mnist at max_angle_deg=30: cnn" in head[1]


def test_cell_line_gives_clean_accuracy_its_own_sample_size():
    """Nettack cells: clean accuracy over all test nodes, robust over 40 targets; each interval uses its own n."""
    from robustbench_geo.sweep.driver import cell_line

    class _Cell:
        def describe(self):
            return "gcn x nettack"

    r = {"ok": True, "seconds": 1.0, "metrics": {"clean_accuracy": 0.834, "robust_accuracy": 0.05, "n": 40,
                                                  "clean_n": 1988}}
    line = cell_line(_Cell(), r)
    assert "clean 83.40 % [81.7, 85.0] (n=1988)" in line  # with n=40 it would read [68.1, 91.3]
    assert "robust 5.00 % [1.4, 16.5] (n=40)" in line
    same = cell_line(_Cell(), {"ok": True, "seconds": 1.0, "metrics": {"clean_accuracy": 0.9, "robust_accuracy": 0.5,
                                                                        "n": 100, "clean_n": 100}})
    assert same.count("(n=100)") == 1
