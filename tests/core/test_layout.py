"""The house rules of docs/architecture.md, checked on the source: one namespace, no import cycles (lazy
imports inside functions count too: they are the same dependency, only later), and lower rooms never
import higher ones."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import survsr

REPO = Path(__file__).resolve().parents[2]
ROOMS = {"survsr.models": "models", "survsr.video": "video", "survsr.pipelines": "pipelines",
         "survsr.serve": "serve", "survsr.enhance": "survsr/enhance", "survsr": "survsr"}
# Higher rooms may import lower ones, never the reverse (survsr core = the few modules every room uses).
LAYER = {"survsr": 0, "survsr.models": 1, "survsr.video": 1, "survsr.enhance": 2, "survsr.pipelines": 3,
         "survsr.serve": 3}
# Commands at the top of the core package: they run stages, so they may import anything.
TOP = {"survsr.cli", "survsr.verify"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, folder in ROOMS.items():
        for f in sorted((REPO / folder).glob("*.py")):
            name = pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"
            mods.setdefault(name, f)
    return mods


def _imports(path: Path, known: set[str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n:
                out.add(n)
    return out


def _room(mod: str) -> str:
    return max((r for r in LAYER if mod == r or mod.startswith(r + ".")), key=len)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, known) - {m, "survsr"} for m, p in mods.items()}


def test_no_import_cycles(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if not state.get(n):
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)


def test_lower_rooms_never_import_higher_ones(graph):
    bad = [f"{m} imports {n}" for m, deps in graph.items() if m not in TOP for n in deps
           if n not in TOP and LAYER[_room(n)] > LAYER[_room(m)]]
    assert not bad, bad


def test_one_namespace(tmp_path):
    """Installed, the rooms are survsr.models, survsr.video, ...; nothing named `models` or `serve` is
    importable from outside the checkout."""
    code = ("import importlib.util as u, survsr.models.zssr, survsr.serve.schema, survsr.enhance.runner;"
            "print([n for n in ('models', 'video', 'pipelines', 'serve', 'enhance') if u.find_spec(n)])")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    assert Path(survsr.__file__).resolve().parent == REPO / "survsr"
