"""Conventions every notebook follows (STYLE.md): one parameters cell of literals that equals its
stage's typed config, the config built the same way in every setup cell, no def/class, the record
call last, no committed outputs, and every params file names real parameters only."""

import ast
import json
from pathlib import Path

import papermill
import pytest

from recnb import paths, run

ALL_NOTEBOOKS = sorted((paths.REPO_ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOKS = [p for p in ALL_NOTEBOOKS if p.stem in paths.STAGES]  # the pipeline's stages
APPS = ("08_playground",)  # notebooks on top of a finished run, not stages
COMMON = {"run": "tiny", "outputs_dir": "outputs", "dataset": "tiny", "seed": 0, "threads": 1}


def tagged_index(cells):
    return next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def tiny_main_path(stage: str) -> dict:
    """A stage's parameters in the tiny batch's main path: what a notebook opened alone runs with.

    Stage 06's models leave out the variant dirs (04_sft_unsloth-v1): nbval runs the main path only.
    """
    job = next(j for j in run.load_jobs(paths.REPO_ROOT / "params" / "tiny.yaml")[1] if j.stage == stage and not j.variant)
    params = dict(job.params)
    if "models" in params:
        params["models"] = {k: v for k, v in params["models"].items() if "-" not in v}
    return params


def test_every_stage_has_its_notebook():
    assert [p.stem for p in NOTEBOOKS] == list(paths.STAGES)
    assert [p.stem for p in ALL_NOTEBOOKS if p not in NOTEBOOKS] == list(APPS)


@pytest.mark.parametrize("path", [p for p in ALL_NOTEBOOKS if p.stem in APPS], ids=lambda p: p.stem)
def test_app_notebooks_keep_the_shared_conventions(path: Path):
    """No stage config or record, but the project's kernel, a literal parameters cell, logic in recnb."""
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == paths.KERNEL_NAME
    assert "".join(nb["cells"][0]["source"]).startswith(f"# {path.stem[:2]} · ")
    tagged = [c for c in code_cells(nb) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and all(isinstance(s, ast.Assign) for s in ast.parse("".join(tagged[0]["source"])).body)
    for cell in code_cells(nb):
        tree = ast.parse("".join(cell["source"]))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not cell.get("outputs") and cell.get("execution_count") is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path: Path):
    nb = json.loads(path.read_text())
    cells = code_cells(nb)
    assert nb["cells"][0]["cell_type"] == "markdown"
    # one kernel for the project (make install registers it): papermill, nbval and Lab all open the same one
    assert nb["metadata"]["kernelspec"] == {"name": paths.KERNEL_NAME, "display_name": "recnb (.venv)",
                                            "language": "python"}
    assert "".join(nb["cells"][0]["source"]).startswith(f"# {path.stem[:2]} · ")
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    values = {}
    for stmt in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        values[stmt.targets[0].id] = ast.literal_eval(stmt.value)  # raises unless a plain literal
    assert {k: values.get(k) for k in COMMON} == COMMON
    config = run.stage_configs()[path.stem]
    assert values == tiny_main_path(path.stem), "the parameters cell holds the tiny batch's values (params/tiny.yaml)"
    setup = "".join(cells[tagged_index(cells) + 1]["source"])
    assert f"{config.__name__}.from_params(params)" in setup, "the setup cell builds the typed config"
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


SCRIPTS = sorted((paths.REPO_ROOT / "benchmarks").glob("*.py")) + sorted((paths.REPO_ROOT / "studies").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_benchmarks_and_studies_share_one_cli_convention(script: Path):
    """`--run <name>` (never a path option), `--threads` defaulting to 1 thread, and one last line
    `name=<script> key=value ...` written by `record.summary_line`."""
    text = script.read_text()
    assert f'summary_line("{script.stem}"' in text or f"summary_line(\n        \"{script.stem}\"" in text
    assert "--run-dir" not in text and "--eval-dir" not in text
    threads = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call) and n.args
               and isinstance(n.args[0], ast.Constant) and n.args[0].value == "--threads"]
    for call in threads:
        default = next(k.value.value for k in call.keywords if k.arg == "default")
        assert default == 1, "one default for every script: 1 thread (quote benchmarks as ratios)"


STAGE_PACKAGES = ("data", "sasrec", "instructions", "sft", "ppo", "evaluation", "report")
# A stage imports another only to load that stage's artifact, through its named loader.
LOADERS = {("instructions", "data"): "Prepared, stage 01's tables", ("ppo", "sasrec"): "the teacher (load_sasrec)"}


def _recnb_imports(path: Path) -> set[str]:
    """The top-level recnb modules or packages a file imports (`recnb.ppo.model` -> `ppo`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recnb"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
    return found


@pytest.mark.parametrize("package", STAGE_PACKAGES)
def test_a_stage_imports_only_the_core_and_the_artifact_loaders_of_other_stages(package):
    root = paths.REPO_ROOT / "recnb" / package
    for path in root.rglob("*.py"):
        others = (_recnb_imports(path) & set(STAGE_PACKAGES)) - {package}
        assert all((package, o) in LOADERS for o in others), f"{path.relative_to(paths.REPO_ROOT)} imports {others}"


def test_no_stage_imports_an_app():
    for package in STAGE_PACKAGES:
        for path in (paths.REPO_ROOT / "recnb" / package).rglob("*.py"):
            assert "playground" not in _recnb_imports(path), path


def test_the_core_imports_no_stage_but_the_runner_their_configs():
    for path in (paths.REPO_ROOT / "recnb").glob("*.py"):
        stages = _recnb_imports(path) & set(STAGE_PACKAGES)
        assert not stages or path.name == "run.py", f"{path.name} imports stage package(s) {stages}"
