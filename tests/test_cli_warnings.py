"""A warning raised by a computation (k-means or a probe that did not converge, Sinkhorn short of its
tolerance) reaches the user as one "warning:" line on stderr, once per text — not Python's two lines
with a source path and code excerpt; ``WINNOW_DEBUG=1`` keeps Python's format. Checked through the
real entry point in a subprocess (a command registered for the test raises the warnings)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import warnings
from cli.app import app
from cli.main import main

@app.command("warn-probe")
def warn_probe() -> None:
    for _ in range(2):
        warnings.warn("spherical k-means did not converge in iters=20; raise iters [prune.kmeans_iters]", RuntimeWarning)
    warnings.warn("linear probe: L-BFGS hit max_iter=200", RuntimeWarning)

main(["warn-probe"])
"""


def _run(debug: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WINNOW_DEBUG"}
    if debug:
        env["WINNOW_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)


def test_warnings_are_one_line_each_and_said_once():
    out = _run(debug=False)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == ["warning: spherical k-means did not converge in iters=20; raise iters [prune.kmeans_iters]",
                     "warning: linear probe: L-BFGS hit max_iter=200"], out.stderr  # brackets kept: no markup


def test_debug_keeps_pythons_warning_format():
    out = _run(debug=True)
    assert out.returncode == 0 and "RuntimeWarning" in out.stderr and "<string>" in out.stderr
