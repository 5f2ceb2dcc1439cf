"""Session fixture: every project of cases.py, built once through the project cache.

qornn.hls.cache keeps compiled projects in $QORNN_CACHE/hls or ~/.cache/qornn/hls, keyed by the
artifact's content hash and the options; misses are generated one by one and compiled in
parallel (one g++ per core), so a warm run compiles nothing.
"""

from __future__ import annotations

import pytest

from .cases import ALL, COMPARED, make_artifact, options


@pytest.fixture(scope="session")
def projects():
    """name -> (artifact, compiled project dir)."""
    from qornn.hls import cached_projects

    arts = {name: make_artifact(name) for name in ALL}
    paths = cached_projects([(arts[name], options(name)) for name in ALL])
    return {name: (arts[name], path) for name, path in zip(ALL, paths)}


def pytest_terminal_summary(terminalreporter):
    if COMPARED["values"]:
        terminalreporter.write_line(
            f"firmware C-sim vs simulator: {COMPARED['values']} output integers compared with np.array_equal "
            f"({COMPARED['sequences']} sequences, {COMPARED['steps']} time steps)")
