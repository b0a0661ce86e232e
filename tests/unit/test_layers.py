"""The layers of ``src/otpkit`` as ARCHITECTURE.md draws them, checked on every import.

ARCHITECTURE.md's ```layers block names each layer (a package or a top-level module of
``src/otpkit``) and the layers it imports directly. An import from one layer into
another is allowed only down that graph (directly or through the layers below), the
graph has no cycle, and a layer never reaches into another's private parts: no
``otpkit.<layer>._module``, no ``_name`` imported from another layer, no ``._name``
read off a module of another layer. Each package's ``__init__`` is its surface.

Imports are read with ``ast`` (function-level and ``TYPE_CHECKING`` ones included), so
nothing is imported to check them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "otpkit"


def read_layers(markdown: str) -> dict[str, frozenset[str]]:
    """The ```layers block: ``name -> dep, dep`` per line."""
    match = re.search(r"^```layers\n(.*?)^```", markdown, re.S | re.M)
    if match is None:
        raise AssertionError("ARCHITECTURE.md has no ```layers block")
    layers: dict[str, frozenset[str]] = {}
    for raw in match.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, deps = line.partition("->")
        if not sep:
            raise AssertionError(f"layers block: {raw!r}: expected 'name -> dep, dep'")
        name = name.strip()
        if name in layers:
            raise AssertionError(f"layers block: {name!r} named twice")
        layers[name] = frozenset(d.strip() for d in deps.split(",") if d.strip())
    return layers


def find_cycle(graph: Mapping[str, frozenset[str] | set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def reachable(layers: Mapping[str, frozenset[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(layers.get(start, ()))
    while todo:
        layer = todo.pop()
        if layer not in seen:
            seen.add(layer)
            todo.extend(layers.get(layer, ()))
    return seen


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    names: tuple[str, ...]  # names taken from it (empty for ``import x``)
    bound: str | None = None  # the local name bound to the module itself, if any


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str, src: Path) -> bool:
    base = src.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(src: Path, package: str = PACKAGE) -> Iterator[tuple[Import, ast.Module]]:
    for path in sorted((src / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        me = module_name(path, src)
        here = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
        rel = str(path.relative_to(src.parent))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        bound = alias.asname or (None if "." in alias.name else alias.name)
                        yield Import(rel, node.lineno, me, alias.name, (), bound), tree
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target.split(".")[0] != package:
                    continue
                plain: list[str] = []
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if is_module(sub, src):
                        # ``from otpkit.x import _mod``: an import of that module
                        bound = alias.asname or alias.name
                        yield Import(rel, node.lineno, me, sub, (), bound), tree
                    else:
                        plain.append(alias.name)
                if plain:
                    yield Import(rel, node.lineno, me, target, tuple(plain)), tree


def layer_of(dotted: str, package: str = PACKAGE) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else package


def private_part(dotted: str) -> str | None:
    """The first private component of a module path below its layer, if any."""
    return next((p for p in dotted.split(".")[2:] if p.startswith("_")), None)


def check(src: Path, layers: Mapping[str, frozenset[str]], package: str = PACKAGE) -> list[str]:
    """Every breach of the layer rules in ``src``, one line each."""
    problems: list[str] = []
    cycle = find_cycle(layers)
    if cycle is not None:
        problems.append(f"the layers block has a cycle: {' -> '.join(cycle)}")
    for layer, deps in layers.items():
        for dep in sorted(deps - set(layers)):
            problems.append(f"layers block: {layer} -> {dep}: {dep} is not a layer")
    present = {layer_of(module_name(p, src), package) for p in (src / package).rglob("*.py")}
    for layer in sorted(present - set(layers)):
        problems.append(f"{package}/{layer} is in no line of the layers block")
    for layer in sorted(set(layers) - present):
        problems.append(f"layers block names {layer}, which src/{package} does not have")

    actual: dict[str, set[str]] = {}
    # per file, its tree and the names it binds to modules of other layers
    cross_modules: dict[str, tuple[ast.Module, set[str]]] = {}
    for imp, tree in imports_of(src, package):
        mine, theirs = layer_of(imp.module, package), layer_of(imp.target, package)
        if mine == theirs:
            continue
        where = f"{imp.file}:{imp.line}"
        actual.setdefault(mine, set()).add(theirs)
        if theirs not in reachable(layers, mine):
            problems.append(f"{where}: {mine} may not import {theirs} ({imp.target})")
        if (part := private_part(imp.target)) is not None:
            problems.append(f"{where}: {imp.target}: private module {part} of layer {theirs}")
        for name in imp.names:
            if name.startswith("_"):
                problems.append(f"{where}: {name}: a private name of {imp.target}")
        if imp.bound is not None:
            cross_modules.setdefault(imp.file, (tree, set()))[1].add(imp.bound)
    # ``module._private`` read off a module of another layer
    for file, (tree, bound) in cross_modules.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(f"{file}:{node.lineno}: {node.value.id}.{node.attr}: private")
    cycle = find_cycle(actual)
    if cycle is not None:
        problems.append(f"the imports of src form a cycle: {' -> '.join(cycle)}")
    return problems


def test_src_follows_the_layers_of_architecture_md() -> None:
    layers = read_layers((ROOT / "ARCHITECTURE.md").read_text())
    problems = check(SRC, layers)
    assert not problems, "\n".join(problems)


# The checker itself, on small made-up packages: it must be able to fail.

LAYERS = {"low": frozenset(), "mid": frozenset({"low"}), "top": frozenset({"mid"})}


def _tree(tmp_path: Path, files: Mapping[str, str]) -> Path:
    src = tmp_path / "src"
    for rel, text in {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "from pkg.low._impl import thing\n",
        "pkg/low/_impl.py": "thing = 1\n_hidden = 2\n",
        "pkg/mid.py": "from pkg.low import thing\n",
        "pkg/top/__init__.py": "from pkg import mid\n",
        **files,
    }.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


def _check(src: Path, layers: Mapping[str, frozenset[str]] = LAYERS) -> list[str]:
    return check(src, {"pkg": frozenset({"top"}), **layers}, package="pkg")


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert _check(_tree(tmp_path, {})) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from pkg.low._impl import thing\n", "private module _impl of layer low"),
        ("from pkg.low import _impl\n", "private module _impl of layer low"),
        ("from pkg.low._impl import _hidden\n", "_hidden: a private name"),
        ("import pkg.low._impl\n", "private module _impl"),
        ("from pkg import low\nx = low._impl\n", "low._impl: private"),
    ],
)
def test_the_checker_finds_a_private_import(tmp_path: Path, text: str, expected: str) -> None:
    problems = _check(_tree(tmp_path, {"pkg/mid.py": text}))
    assert any(expected in p for p in problems), problems


def test_the_checker_finds_an_upward_import_and_the_cycle_it_makes(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"pkg/low/_more.py": "def f():\n    from pkg import mid\n"})
    problems = _check(src)
    assert any("low may not import mid" in p for p in problems), problems
    assert any("cycle: low -> mid -> low" in p for p in problems), problems


def test_the_checker_finds_a_cycle_in_the_layers_block(tmp_path: Path) -> None:
    layers = {**LAYERS, "low": frozenset({"top"})}
    problems = _check(_tree(tmp_path, {}), layers)
    assert any("the layers block has a cycle" in p for p in problems), problems


def test_the_checker_finds_a_layer_missing_from_the_block(tmp_path: Path) -> None:
    problems = _check(_tree(tmp_path, {"pkg/extra.py": ""}))
    assert "pkg/extra is in no line of the layers block" in problems


def test_no_folder_of_src_is_build_output_to_a_usual_gitignore() -> None:
    # the usual Python .gitignore ignores dist/, build/, *.egg-info/ ... at any depth;
    # a package folder of that name is lost to a fork that uses it
    ignored = {"build", "dist", "develop-eggs", "downloads", "eggs", "lib", "lib64", "parts"}
    folders = [p for p in (SRC / PACKAGE).rglob("*") if p.is_dir() and p.name != "__pycache__"]
    assert folders, "no package folders found"
    assert [str(p) for p in folders if p.name in ignored or p.name.endswith(".egg-info")] == []
