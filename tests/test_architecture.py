"""The layers docs/architecture.md draws hold: who may connect to lakeFS, who imports what, where defaults live."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segmodels"
# MLflow builds these from a URI or a stored dict alone, so they connect on their own (see their docstrings): a
# logged dataset source's load(), and the lakefs:// artifact repository. ui/ (segmodels ui, segmodels compare) is a
# top layer beside pipeline/. Everything else below pipeline/ is handed a client.
CONNECT_ALLOWED = {"pipeline", "ui", "tracking/dataset.py", "lakefs_artifacts.py"}


def python_files():
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def calls_of(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text())
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (
                isinstance(node.func, ast.Attribute)
                and node.func.attr == name
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "sqlite3")
            )
        )
    ]


def test_only_the_pipeline_opens_a_lakefs_connection():
    offenders = []
    for path in python_files():
        relative = path.relative_to(PACKAGE).as_posix()
        if (
            relative.split("/")[0] in CONNECT_ALLOWED
            or relative in CONNECT_ALLOWED
            or relative.startswith("versioning/")
        ):
            continue
        offenders += [f"{relative}:{line}" for line in calls_of(path, "connect")]
    assert not offenders, f"connect() below pipeline/: {offenders}"


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("segmodels.training", ("segmodels.inference", "mlflow", "segmodels.pipeline")),
        ("segmodels.data", ("segmodels.versioning", "mlflow", "segmodels.training")),
        ("segmodels.config", ("torch", "mlflow")),
        ("segmodels.pipeline.params", ("torch", "mlflow", "lakefs_sdk")),
    ],
)
def test_a_layer_does_not_import_what_is_above_or_beside_it(module, forbidden):
    code = (
        f"import sys, {module}; print(','.join(sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {{'mlflow', 'torch', 'lakefs_sdk'}} and m.count('.') == 0 "
        f"or m.startswith('segmodels.'))))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
        .stdout.strip()
        .split(",")
    )
    assert not [name for name in loaded for bad in forbidden if name == bad or name.startswith(bad + ".")]


def root_name(node: ast.AST) -> str:
    """``cfg`` for ``cfg.trainer.x``; empty for anything not rooted in a plain name."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def test_no_code_reads_config_with_a_fallback_default():
    """Config values are read as attributes: ``cfg.get("key", default)`` would be a second default beside conf/."""
    offenders = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and root_name(node.func.value).endswith("cfg")
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


TRAINING = PACKAGE / "training"


def training_imports(path: Path) -> set[str]:
    """The ``segmodels/training`` modules ``path`` imports, anywhere in it (``if TYPE_CHECKING:`` and function
    bodies included): ``from .x import``, ``from segmodels.training.x import``, ``from . import x``."""
    imported = []  # dotted names of modules, and of names imported from a package
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(filter(None, ["segmodels.training" if node.level == 1 else "", node.module]))
            imported += [module] + [f"{module}.{alias.name}" for alias in node.names]
    prefix = "segmodels.training."
    modules = {name.removeprefix(prefix).split(".")[0] for name in imported if name.startswith(prefix)}
    return {module for module in modules if (TRAINING / f"{module}.py").is_file()} - {path.stem}


def test_the_training_modules_import_each_other_without_a_cycle():
    """Each training module imports only modules below it (even for type checking): a cycle means two concerns
    are tangled, so importing either one loads the other."""
    graph = {path.stem: training_imports(path) for path in TRAINING.glob("*.py")}
    assert graph["callbacks"] and graph["loop"], graph  # the parse sees imports at all
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module not in done:
            for imported in sorted(graph[module]):
                visit(imported, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_no_training_function_takes_more_than_six_positional_parameters():
    """What travels together is grouped (a dataclass) and the rest is keyword-only, as in torchvision's references."""
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
        for path in sorted(TRAINING.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and len(node.args.posonlyargs) + len(node.args.args) > 6
    ]
    assert not offenders, offenders


EMBEDDED_LAKEFS = PACKAGE.parent / "embedded-lakefs" / "src" / "embedded_lakefs"
# What segmodels may import of embedded-lakefs, and where: helpers that run no server (segmodels reaches the server
# over HTTP only), and the package's own commands under ``segmodels lakefs``.
EMBEDDED_LAKEFS_USES = {
    "embedded_lakefs.datadir": {"versioning/embedded.py"},
    "embedded_lakefs.checksums": {"versioning/client.py", "versioning/hashing.py"},
    "embedded_lakefs.validation": {"ui/lakefs_reader.py"},
    "embedded_lakefs.errors": {"ui/lakefs_reader.py"},
    "embedded_lakefs.cli": {"cli.py"},
}


def absolute_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each absolute import in ``path``, at any depth (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_embedded_lakefs_imports_neither_segmodels_nor_torch_nor_mlflow():
    files = sorted(EMBEDDED_LAKEFS.rglob("*.py"))
    offenders = [
        f"{path.relative_to(EMBEDDED_LAKEFS)}:{line} {module}"
        for path in files
        for line, module in absolute_imports(path)
        if module.split(".")[0] in ("segmodels", "torch", "mlflow")
    ]
    assert files and not offenders, f"embedded-lakefs must install and run alone: {offenders}"


def test_segmodels_imports_of_embedded_lakefs_run_no_server():
    offenders = []
    for path in python_files():
        relative = path.relative_to(PACKAGE).as_posix()
        for line, module in absolute_imports(path):
            if module.split(".")[0] == "embedded_lakefs" and relative not in EMBEDDED_LAKEFS_USES.get(module, ()):
                offenders.append(f"{relative}:{line} {module}")
    assert not offenders, f"segmodels reaches the embedded server over HTTP (lakefs-sdk) only: {offenders}"
