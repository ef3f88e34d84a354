"""Re-execute the notebooks in place, so that the committed outputs are current.

    python notebooks/execute.py                      # every notebooks/*.ipynb
    python notebooks/execute.py notebooks/02_*.ipynb # some of them

Each notebook runs top to bottom in a fresh `python3` kernel of this interpreter, with this
directory as its working directory and the repository's `jaxcheck` first on the path; the
notebook is written back with its outputs (plots as PNG) only if every cell ran.
"""
from __future__ import annotations

import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT_S = 600          # per cell


def execute(path: pathlib.Path) -> nbformat.NotebookNode:
    """Run `path` top to bottom and return the executed notebook (raises on a cell error)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:               # no timestamps: re-running should not churn the diff
        cell.metadata.pop("execution", None)
    # The kernel inherits the environment: make it import this checkout's jaxcheck.
    root = str(HERE.parent)
    paths = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + ([paths] if paths else []))
    try:
        NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ["PYTHONPATH"] = paths
        if not paths:
            del os.environ["PYTHONPATH"]
    return nb


def main(argv: list[str]) -> int:
    paths = [pathlib.Path(p) for p in argv] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        start = time.time()
        nb = execute(path)
        nbformat.write(nb, path)
        print(f"{path}: executed in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
