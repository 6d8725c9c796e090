"""JupyterLab for this repository: `python -m recnb.lab` (what `make lab` runs).

JupyterLab writes the kernel's `language_info` (Python's version, mimetype, lexer, ...) into a
notebook's metadata as soon as its kernel starts, and any metadata change marks the notebook
modified: opening a committed notebook would ask to save it, and saving it would put this machine's
Python patch version into the repository. The committed notebooks keep only
`language_info: {name: python}` (nbstripout leaves it so), and `NotebookContents` bridges the two:

- reading a notebook whose `language_info` is only `{name: python}` fills in this environment's
  (the kernel `recnb` runs this Python and this ipykernel), so the kernel's reply changes nothing;
- saving a notebook whose `language_info` is exactly this environment's writes `{name: python}` back,
  so a saved notebook differs from the committed one only where its cells do.

A notebook recorded with another language or Python is left as it is in both directions.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

from ipykernel.ipkernel import IPythonKernel
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from recnb import paths

STRIPPED = {"name": "python"}


def kernel_language_info() -> dict:
    """The `language_info` this environment's IPython kernel reports in its `kernel_info_reply`."""
    return copy.deepcopy(IPythonKernel.language_info)


class NotebookContents(AsyncLargeFileManager):
    """jupyter_server's default contents manager, with the `language_info` bridge of the module doc."""

    async def get(self, path, content=True, type=None, format=None, require_hash=False):
        model = await super().get(path, content=content, type=type, format=format, require_hash=require_hash)
        if model.get("type") == "notebook" and model.get("content") is not None:
            meta = model["content"].setdefault("metadata", {})
            if meta.get("language_info", STRIPPED) == STRIPPED:
                meta["language_info"] = kernel_language_info()
        return model

    async def save(self, model, path=""):
        if model.get("type") == "notebook" and isinstance(model.get("content"), dict):
            meta = model["content"].get("metadata", {})
            if meta.get("language_info") == kernel_language_info():
                model = {**model, "content": {**model["content"], "metadata": {**meta, "language_info": dict(STRIPPED)}}}
        return await super().save(model, path)


def lab_command(root: Path | str = paths.REPO_ROOT, *extra: str) -> list[str]:
    """The `jupyter lab` command line serving `root` with `NotebookContents` (plus `extra` options)."""
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}",
            f"--ServerApp.contents_manager_class={NotebookContents.__module__}.{NotebookContents.__name__}", *extra]


def main(argv: list[str] | None = None) -> None:
    """Start JupyterLab at the repository root (notebooks/, outputs/, paper_figures/ in the file
    browser); extra arguments go to `jupyter lab`."""
    cmd = lab_command(paths.REPO_ROOT, *(sys.argv[1:] if argv is None else argv))
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
