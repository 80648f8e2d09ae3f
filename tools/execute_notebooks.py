"""Re-execute chapters in place, top to bottom in a fresh kernel, as nbval.

Usage: ``python tools/execute_notebooks.py chapters/01-....ipynb [...]``
(``make execute NB=...`` calls this). Unlike ``jupyter execute --inplace``
it records no execution timestamps in the cells' metadata, and it joins the
consecutive pieces of a cell's stdout (or stderr), which the kernel splits
wherever its buffer happened to flush: so a re-run that reproduces the
outputs leaves the notebook unchanged in git.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def join_streams(outputs: list) -> list:
    """Merge each run of consecutive same-name stream outputs into one."""
    joined: list = []
    for output in outputs:
        previous = joined[-1] if joined else None
        if (
            output.output_type == "stream"
            and previous is not None
            and previous.output_type == "stream"
            and previous.name == output.name
        ):
            previous.text += output.text
        else:
            joined.append(output)
    return joined


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timings of earlier tools
        if cell.cell_type == "code":
            cell.outputs = join_streams(cell.outputs)
    nbformat.write(notebook, path)
    print(f"executed {path}")


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(
        str(p) for p in Path("chapters").glob("*.ipynb")
    ):
        execute(Path(name))
