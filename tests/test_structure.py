"""The package's shape: no import cycles, no private names used across modules, no CLI flags in library errors,
modules and functions of a size a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "taxonomist"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules ``name`` imports anywhere in its code (module level, inside functions, and under
    ``if TYPE_CHECKING:`` -- a type-only import is a dependency too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = (node.module or "") if node.level == 0 else ".".join(
                package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in MODULES and m != name}


def test_no_module_imports_the_package_root() -> None:
    # the root (taxonomist/__init__) imports the public API; a module that imports the root closes a cycle
    offenders = sorted(m for m, p in MODULES.items() if m != "taxonomist" and "taxonomist" in _imports(m, p))
    assert offenders == []


def test_no_import_cycles() -> None:
    graph = {m: _imports(m, p) - {"taxonomist"} for m, p in MODULES.items()}
    cycles = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_imports_inside_functions_and_for_type_checking(tmp_path: Path) -> None:
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .classifier import TaxonomyClassifier\n"
           "def f():\n    from .catalog import read_catalog\n    return read_catalog\n")
    p = tmp_path / "x.py"
    p.write_text(src)
    assert _imports("taxonomist.x", p) == {"taxonomist.catalog", "taxonomist.classifier"}


def _private_uses(path: Path) -> list[str]:
    """Private names of other modules this module uses: imported by name, or read as ``obj._name`` where no code
    of this module defines ``_name`` (``self`` / ``cls``: the class's own, or inherited)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("taxonomist")):
            out += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
              and node.attr not in own
              and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            out.append(ast.unparse(node))
    return out


def test_no_private_names_are_used_across_modules() -> None:
    found = {m: _private_uses(p) for m, p in MODULES.items()}
    assert {m: v for m, v in found.items() if v} == {}


def test_the_private_name_check_sees_imports_and_attributes(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("from .classifier import _frame\n\ndef f(model):\n    return model._proba(1), model._mine\n\n"
                 "class A:\n    def g(self, other):\n        self._mine = 1\n        return other._mine, self._check()\n")
    assert _private_uses(p) == ["classifier._frame", "model._proba"]


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_CLASSIFIER_LINES = 400  # the estimator composes parts (fitting, prediction, persistence, explain) that own the work


def test_modules_and_functions_stay_readable() -> None:
    long_modules, long_functions = {}, {}
    for m, p in MODULES.items():
        text = p.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules[m] = text.count("\n")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions[f"{m}.{node.name}"] = n
    assert long_modules == {} and long_functions == {}
    assert (ROOT / "classifier.py").read_text(encoding="utf-8").count("\n") < MAX_CLASSIFIER_LINES


def test_library_errors_name_parameters_not_command_line_flags() -> None:
    # the library's messages speak of its Python API; the CLI adds its flags (cli.common.error_text)
    import re

    flag = re.compile(r"(?<![\w-])--[a-z]")
    found = []
    for m, p in MODULES.items():
        if m.startswith("taxonomist.cli"):
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                # (an error's cli= text is the command line's own wording of it: flags belong there)
                cli = {id(c) for k in ast.walk(node.exc) if isinstance(k, ast.keyword) and k.arg == "cli"
                       for c in ast.walk(k.value)}
                found += [f"{m}:{node.lineno}" for c in ast.walk(node.exc) if id(c) not in cli
                          and isinstance(c, ast.Constant) and isinstance(c.value, str) and flag.search(c.value)]
    assert found == []


def test_the_command_line_adds_its_flags_to_library_errors() -> None:
    from taxonomist.cli.common import error_text
    from taxonomist.exceptions import CatalogError

    e = CatalogError("expected a title column; name it with mapping={'title': 'COLUMN'}", options=("mapping",))
    assert error_text(e) == ("expected a title column; name it with mapping={'title': 'COLUMN'} "
                             "(command line: --map FIELD=COLUMN)")
    assert error_text(CatalogError("plain")) == "plain"


def test_the_command_line_starts_without_the_heavy_libraries() -> None:
    """Issue 36: `taxonomist --help` took 1.7 s before anything printed (pandas, scikit-learn and more imported at
    start). The CLI and the package import them when a command needs them."""
    import subprocess
    import sys

    code = ("import sys, taxonomist, taxonomist.cli; "
            "heavy = sorted(m for m in ('pandas', 'sklearn', 'scipy', 'torch', 'numpy', 'transformers') if m in sys.modules); "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", done.stdout
    import taxonomist

    assert taxonomist.TaxonomyClassifier.__name__ == "TaxonomyClassifier"  # the names still import on use
    assert issubclass(taxonomist.NotFittedError, taxonomist.TaxonomistError)
    from sklearn.exceptions import NotFittedError as SkNotFittedError

    assert issubclass(taxonomist.NotFittedError, SkNotFittedError)
