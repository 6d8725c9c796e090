"""The repository's scripts (benchmarks/, studies/) are not a package: tests import them by path."""

import importlib.util
from pathlib import Path
from types import ModuleType

from recnb import paths


def load_script(relative: str | Path) -> ModuleType:
    """The script at `relative` (to the repository root; an absolute path as is) as a fresh module,
    its `main` not run."""
    path = paths.REPO_ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
