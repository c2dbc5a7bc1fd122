"""Every notebook under notebooks/ runs from top to bottom, in smoke mode.

The notebooks read ``PYRO_GEM_SMOKE=1`` from the environment and shrink every run to a few
seconds; the kernel inherits the environment of this process.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_found() -> None:
    assert NOTEBOOKS, "no notebooks under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_saved_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    # A notebook lists the data it reads (paths from the repository root) in its metadata.
    root = Path(__file__).resolve().parents[1]
    for needed in nb.metadata.get("pyro_gem", {}).get("requires", []):
        if not (root / needed).exists():
            pytest.skip(f"{path.name} reads {needed}, which is not on this machine")
    monkeypatch.setenv("PYRO_GEM_SMOKE", "1")
    monkeypatch.setenv("PYRO_GEM_CACHE", str(tmp_path / "cache"))  # not the user's cache
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The tensors are tiny: one thread is as fast, and far faster when other processes share
    # the cores (oversubscribed OpenMP threads slowed this test down several times over).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the failing cell, on any error
