"""Conventions every notebook follows (STYLE.md): one parameters cell of literals, no def/class,
the record call last, no committed outputs, and every params file names real parameters only."""

import ast
import json
from pathlib import Path

import papermill
import pytest

from recnb import paths, run

NOTEBOOKS = sorted((paths.REPO_ROOT / "notebooks").glob("*.ipynb"))
COMMON = {"run": "tiny", "outputs_dir": "outputs", "dataset": "tiny", "seed": 0, "threads": 1}


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_every_stage_has_its_notebook():
    assert [p.stem for p in NOTEBOOKS] == list(paths.STAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path: Path):
    nb = json.loads(path.read_text())
    cells = code_cells(nb)
    assert nb["cells"][0]["cell_type"] == "markdown"
    assert "".join(nb["cells"][0]["source"]).startswith(f"# {path.stem[:2]} · ")
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    values = {}
    for stmt in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        values[stmt.targets[0].id] = ast.literal_eval(stmt.value)  # raises unless a plain literal
    assert {k: values.get(k) for k in COMMON} == COMMON
    # papermill skips lines with a second "=" (e.g. in a comment): every parameter must be visible to it
    assert sorted(papermill.inspect_notebook(str(path))) == sorted(values)
    for cell in cells:
        tree = ast.parse("\n".join(l for l in "".join(cell["source"]).splitlines() if not l.lstrip().startswith(("%", "!"))))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))], "logic belongs in recnb/"
        assert not cell.get("outputs") and cell.get("execution_count") is None, "strip outputs before committing"
    assert "record.record_results(" in "".join(cells[-1]["source"])


@pytest.mark.parametrize("params_file", sorted((paths.REPO_ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_params_files_name_real_parameters(params_file):
    name, jobs = run.load_jobs(params_file)
    assert name and jobs
    run.load_jobs(params_file, paper=True)
