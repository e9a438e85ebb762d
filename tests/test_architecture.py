"""The import direction of docs/architecture.md, read from the source with `ast` (nothing is imported).

The library (`modeling_pig/`) never imports the scripts around it: not `training`, `datasets_scripts`,
`benchmarks` or `model_cards`. The model-card package serves the scripts and reads only the library (the Hub
metadata of `modeling_pig.model_card`); the dataset loaders never reach into training or benchmarks; training
never imports benchmarks. Every `import`, `from ... import` (relative ones
resolved against the file's package), `importlib.import_module("...")` and `__import__("...")` with a literal
name counts, wherever it is written (top level, inside a function, under `if TYPE_CHECKING`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("modeling_pig", "training", "datasets_scripts", "model_cards", "benchmarks")

# folder -> the project packages its modules must not import (docs/architecture.md, "Which imports are allowed").
FORBIDDEN = {
    "modeling_pig": {"training", "datasets_scripts", "benchmarks", "model_cards"},
    "model_cards": {"training", "datasets_scripts", "benchmarks"},
    "datasets_scripts": {"training", "benchmarks"},
    "training": {"benchmarks"},
}


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every module `source` imports; `module` is the file's own dotted name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if node.module:
                found.append((node.lineno, base))
            else:  # `from . import x`: each name may be a module
                found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def module_files(folder: str) -> list[Path]:
    files = sorted((REPO_ROOT / folder).rglob("*.py"))
    assert files, f"no Python file under {folder}/"
    return files


def dotted_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_import_direction(folder):
    violations = []
    for path in module_files(folder):
        module, is_package = dotted_name(path)
        for line, name in imported_modules(path.read_text(encoding="utf-8"), module, is_package):
            top = name.split(".")[0]
            if top in FORBIDDEN[folder]:
                violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert not violations, f"{folder}/ must not import {sorted(FORBIDDEN[folder])} (docs/architecture.md):\n" + \
        "\n".join(violations)


def test_the_library_is_checked_module_by_module():
    """Every module of the library is parsed, subpackages included (metric/, tokenizer_files/)."""
    names = {dotted_name(path)[0] for path in module_files("modeling_pig")}
    assert {"modeling_pig", "modeling_pig.modeling_pig", "modeling_pig.index", "modeling_pig.metric.pig_retrieval",
            "modeling_pig.tokenizer_files.derive"} <= names


@pytest.mark.parametrize("source, module, expected", [
    ("import training.train", "modeling_pig.cli", "training.train"),
    ("from datasets_scripts import load_benchmark", "modeling_pig.cli", "datasets_scripts"),
    ("def f():\n    from benchmarks._common import build_model", "modeling_pig.index", "benchmarks._common"),
    ("from .. import model_cards", "modeling_pig.metric.pig_retrieval", "modeling_pig.model_cards"),
    ("from ...model_cards import card", "modeling_pig.metric.pig_retrieval", "model_cards"),
    ("import importlib\nimportlib.import_module('training.args')", "modeling_pig.cli", "training.args"),
    ("__import__('model_cards.hub')", "modeling_pig.cli", "model_cards.hub"),
    ("from .metrics import compute_retrieval_metrics", "modeling_pig.cli", "modeling_pig.metrics"),
])
def test_every_import_form_is_seen(source, module, expected):
    """The parser finds each way of writing an import, so the direction test above can fail."""
    assert expected in [name for _, name in imported_modules(source, module)]


def test_a_forbidden_import_is_reported():
    names = [name for _, name in imported_modules("if True:\n    import training.train as t\n", "modeling_pig.x")]
    assert any(name.split(".")[0] in FORBIDDEN["modeling_pig"] for name in names)
