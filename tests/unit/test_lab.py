"""`recnb.lab`: the contents manager that keeps a notebook unmodified when its kernel starts."""

import asyncio
import json

import pytest

from recnb import paths
from recnb.lab import STRIPPED, NotebookContents, kernel_language_info, lab_command


def _notebook(language_info):
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "a1", "metadata": {},
                       "outputs": [], "source": "x = 1"}],
            "metadata": {"kernelspec": {"display_name": "recnb (.venv)", "language": "python", "name": "recnb"},
                         "language_info": language_info},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def contents(tmp_path):
    return NotebookContents(root_dir=str(tmp_path))


def test_reading_a_stripped_notebook_gives_the_kernels_language_info(contents, tmp_path):
    (tmp_path / "a.ipynb").write_text(json.dumps(_notebook(STRIPPED)))
    model = asyncio.run(contents.get("a.ipynb"))
    info = model["content"]["metadata"]["language_info"]
    assert info == kernel_language_info() and info["version"].startswith("3.")  # what the kernel will report


def test_saving_writes_the_stripped_form_back_and_keeps_cells(contents, tmp_path):
    (tmp_path / "a.ipynb").write_text(json.dumps(_notebook(STRIPPED)))
    model = asyncio.run(contents.get("a.ipynb"))
    model["content"]["cells"][0]["source"] = "x = 2"
    asyncio.run(contents.save({"type": "notebook", "format": "json", "content": model["content"]}, "a.ipynb"))
    saved = json.loads((tmp_path / "a.ipynb").read_text())
    assert saved["metadata"]["language_info"] == STRIPPED
    assert "".join(saved["cells"][0]["source"]) == "x = 2"


def test_another_languages_info_is_left_alone_both_ways(contents, tmp_path):
    other = {"name": "python", "version": "3.9.0", "mimetype": "text/x-python"}
    (tmp_path / "b.ipynb").write_text(json.dumps(_notebook(other)))
    model = asyncio.run(contents.get("b.ipynb"))
    assert model["content"]["metadata"]["language_info"] == other
    asyncio.run(contents.save({"type": "notebook", "format": "json", "content": model["content"]}, "b.ipynb"))
    assert json.loads((tmp_path / "b.ipynb").read_text())["metadata"]["language_info"] == other


def test_committed_notebooks_are_stripped_so_the_bridge_applies():
    for nb in sorted((paths.REPO_ROOT / "notebooks").glob("*.ipynb")):
        assert json.loads(nb.read_text())["metadata"]["language_info"] == STRIPPED, nb.name


def test_lab_command_names_the_contents_manager_and_the_root(tmp_path):
    cmd = lab_command(tmp_path, "--no-browser")
    assert f"--ServerApp.root_dir={tmp_path}" in cmd and cmd[-1] == "--no-browser"
    assert "--ServerApp.contents_manager_class=recnb.lab.NotebookContents" in cmd
