"""Check that every DVC stage's ``deps`` cover the repository code its command imports.

For a stage whose command is ``get3d <name> ...`` the analysis starts at the function that ``get3d/cli.py``
registers for ``<name>`` (``@command("<name>", ...)``), takes the modules it imports (lazily, inside the
function), and follows every import of every reached module, module level or inside functions, plus
``importlib.import_module("get3d....")`` calls with a literal name.  Importing ``a.b.c`` also runs
``a/__init__.py`` and ``a/b/__init__.py``, so those count too.  Only files inside the repository count.

Not followed: module names built at run time (``get3d.config.SECTIONS`` names each stage's config class as a
string; every such class lives in the package of its stage).

``python scripts/dvc_deps.py [dvc.yaml]`` prints, per stage, the files its deps miss and the code deps
nothing imports; exit status 1 when any.
"""
from __future__ import annotations

import ast
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "get3d"


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The file of module ``name`` inside ``root`` (package -> its ``__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _resolve_from(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(tree: ast.AST, current: str, is_package: bool) -> set[str]:
    """Every module name ``tree`` may import (``from m import x``: ``m`` and ``m.x``, x may be a module)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve_from(node, current, is_package)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) \
                == "import_module":
            out.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return out


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def closure(start: set[str], root: Path = REPO) -> set[Path]:
    """Files of the repository modules reachable from the module names ``start``."""
    seen: set[Path] = set()
    todo = [n for s in start for n in with_parents(s)]
    while todo:
        f = module_file(todo.pop(), root)
        if f is None or f in seen:
            continue
        seen.add(f)
        name = _module_name(f, root)
        tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        for n in imported_names(tree, name, f.name == "__init__.py"):
            todo.extend(with_parents(n))
    return seen


def cli_runner(command: str, cli: Path) -> ast.FunctionDef:
    """The function ``cli`` registers for ``get3d <command>``."""
    tree = ast.parse(cli.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                call = dec.func if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Call) else dec
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "command" and call.args \
                        and isinstance(call.args[0], ast.Constant) and call.args[0].value == command:
                    return node
    raise KeyError(f"{cli}: no function registered for command {command!r}")


def stage_files(cmd: str, root: Path = REPO) -> set[Path]:
    """The repository files the stage command ``get3d <name> ...`` imports."""
    words = shlex.split(cmd)
    if len(words) < 2 or words[0] != PACKAGE:
        raise ValueError(f"stage command {cmd!r} is not a `get3d <stage>` call")
    runner = cli_runner(words[1], root / PACKAGE / "cli.py")
    return closure(imported_names(runner, f"{PACKAGE}.cli", False), root)


def covered(f: Path, deps: list[str], root: Path) -> bool:
    rel = f.relative_to(root)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@dataclass
class StageReport:
    stage: str
    missing: list[str] = field(default_factory=list)   # imported files no dep covers
    unused: list[str] = field(default_factory=list)    # code deps (under get3d/) nothing imports


def check(dvc_yaml: Path, root: Path = REPO) -> list[StageReport]:
    import yaml

    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    reports = []
    for name, st in stages.items():
        deps = [d if isinstance(d, str) else next(iter(d)) for d in st.get("deps", [])]
        files = stage_files(" ".join(str(st["cmd"]).split()), root)
        rep = StageReport(name)
        rep.missing = sorted(str(f.relative_to(root)) for f in files if not covered(f, deps, root))
        for d in deps:
            if Path(d).parts[:1] == (PACKAGE,) and not any(covered(f, [d], root) for f in files):
                rep.unused.append(d)
        reports.append(rep)
    return reports


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else REPO / "dvc.yaml"
    bad = 0
    for rep in check(path):
        for f in rep.missing:
            print(f"{rep.stage}: imports {f}, which no dep covers")
        for d in rep.unused:
            print(f"{rep.stage}: dep {d} is code the stage never imports")
        bad += len(rep.missing) + len(rep.unused)
    print("dvc deps: ok" if not bad else f"dvc deps: {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
