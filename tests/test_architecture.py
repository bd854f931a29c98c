"""The layering of docs/architecture.md, checked on the source: every import between jaxvoc's own modules
(top-level and inside functions) goes from a higher layer to a lower one or within one layer, there is no
import cycle, and jaxvoc never imports torch (torch lives in conversion/, tests/ and experiments/)."""

from __future__ import annotations

import ast
import os

from conftest import REPO

# lowest first; a module may import its own layer or any lower one
LAYERS = [
    ("base", ["jaxvoc", "jaxvoc.errors", "jaxvoc.registry"]),
    ("shared", ["jaxvoc.nn", "jaxvoc.dsp", "jaxvoc.io"]),
    ("models", ["jaxvoc.models"]),
    ("train", ["jaxvoc.train"]),
    ("conversion", ["conversion"]),
    ("commands", ["jaxvoc.commands", "jaxvoc.cli"]),
]
# jaxvoc/__init__.py (load) and jaxvoc/registry.py name higher modules by string only (importlib), so they
# stay at the bottom; jaxvoc.load imports the checkpoint reader and the Hub loader lazily.
EXEMPT = {("jaxvoc", "jaxvoc.io.checkpoint"), ("jaxvoc", "jaxvoc.io.hub")}


def layer_of(module: str) -> int:
    best, rank = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > rank:
                best, rank = i, len(p)
    assert best is not None, module
    return best


def modules() -> dict[str, str]:
    out = {}
    for top in ("jaxvoc", "conversion"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, ".")
                    out[rel[:-9] if rel.endswith(".__init__") else rel] = os.path.join(root, f)
    return out


def imports_of(path: str, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                pkg = name.split(".")[:-node.level] if not path.endswith("__init__.py") else name.split(".")
                base = ".".join(pkg + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] == "torch" and name.startswith("jaxvoc"):
                found.add("torch")
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found


def test_imports_go_down_the_layers_without_cycles():
    mods = modules()
    graph = {m: imports_of(p, m, set(mods)) - {m} for m, p in mods.items()}
    assert not any("torch" in deps for m, deps in graph.items() if m.startswith("jaxvoc")), \
        [m for m, d in graph.items() if "torch" in d]
    upward = [(m, d) for m, deps in graph.items() for d in deps
              if d != "torch" and (m, d) not in EXEMPT and layer_of(d) > layer_of(m)]
    assert not upward, upward
    # no cycle (a package's __init__ importing nothing of its children keeps parent/child edges out)
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph.get(m, ()):
            if d == "torch" or (m, d) in EXEMPT:
                continue
            assert state.get(d) != 1, " -> ".join(stack + [m, d])
            if d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_commands_do_not_import_each_other():
    mods = modules()
    for m, p in mods.items():
        if m.startswith("jaxvoc.commands.") and m != "jaxvoc.commands.common":
            deps = {d for d in imports_of(p, m, set(mods)) if d.startswith("jaxvoc.commands.")}
            assert deps <= {"jaxvoc.commands.common"}, (m, deps)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The graph test can fail: an upward import planted in a copy of a model module is found."""
    src = open(os.path.join(REPO, "jaxvoc", "models", "fsq.py")).read()
    planted = tmp_path / "fsq.py"
    planted.write_text(src + "\n\ndef _bad():\n    from jaxvoc.train import loop\n")
    mods = modules()
    deps = imports_of(str(planted), "jaxvoc.models.fsq", set(mods))
    assert "jaxvoc.train.loop" in deps and layer_of("jaxvoc.train.loop") > layer_of("jaxvoc.models.fsq")
