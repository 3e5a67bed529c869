"""What the package promises about itself: importing has no side effects, it names no machine of
ours and no fixed ImageId, and its functions stay short enough to read."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nucleiseg"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_import_loads_no_heavy_library():
    code = ("import sys, nucleiseg, nucleiseg.metrics\n"
            "from nucleiseg.metrics import dsb_score\n"
            "nucleiseg.dsb_score, nucleiseg.read_image, nucleiseg.softmax_targets\n"
            "print(sorted(m for m in ('torch', 'dask', 'distributed', 'matplotlib') if m in sys.modules))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_figures_leave_the_matplotlib_backend_alone(tmp_path):
    code = ("import matplotlib\nmatplotlib.use('svg')\nimport numpy as np\nimport nucleiseg.figures as f\n"
            f"f.training_curve({str(tmp_path / 'c.png')!r}, [{{'step': 1, 'loss': 1.0, 'val_score': 0.5}}])\n"
            "print(matplotlib.get_backend())")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "svg" and (tmp_path / "c.png").stat().st_size > 1000


def test_package_names_no_machine_of_ours_and_no_image_id():
    for path in SOURCES:
        text = path.read_text()
        assert "../shared" not in text, path
        assert not re.search(r"\b(?=[0-9]*[a-f])[0-9a-f]{12,64}\b", text), f"{path}: a hexadecimal ImageId"


def test_no_function_longer_than_80_lines():
    long = [(n.end_lineno - n.lineno + 1, f"{p.relative_to(PACKAGE.parent)}:{n.lineno} {n.name}")
            for p in SOURCES for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long


#: Pipeline stages, lowest first: a module may import only its own stage or lower ones.
STAGES = [
    {"errors", "progress", "labels", "transforms", "io", "hardware"},
    {"data", "geojson", "outlines"},
    {"targets"},
    {"postprocess", "metrics"},
    {"model", "export"},
    {"inference", "measure", "overlay"},
    {"training", "evaluation", "figures", "bioimageio"},
    {"bench"},
    {"cli", "__main__", "napari_plugin"},
]


def _stage(component: str) -> int:
    return next(i for i, names in enumerate(STAGES) if component in names)


def _is_module(name: str) -> bool:
    """Whether ``nucleiseg.<name>`` is a module or subpackage (not a name of the package root)."""
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _imported_components(path: Path) -> set[str]:
    """Top-level nucleiseg components (``data``, ``training``, ...) that ``path`` imports."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]  # ("nucleiseg", "training")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[: len(package) - node.level + 1]
                parts = list(base) + (node.module.split(".") if node.module else [])
                if len(parts) == 1:  # "from .. import ddp" / "from . import bench"
                    parts += [alias.name for alias in node.names][:1]
            else:
                parts = (node.module or "").split(".")
            if parts[0] == "nucleiseg" and len(parts) > 1 and _is_module(parts[1]):
                found.add(parts[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "nucleiseg" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_dependencies_point_one_way():
    wrong = []
    for path in SOURCES:
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        if rel == ("__init__",):
            continue  # the lazy public API names everything
        own = _stage(rel[0])
        wrong += [f"{path.relative_to(PACKAGE)} imports {c}" for c in _imported_components(path) if _stage(c) > own]
    assert not wrong
