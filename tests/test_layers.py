"""Layers point down (issue 12): walks every import of dlm/, sims/ and scripts/ with ast,
at any depth (function-local imports too), and fails naming file:line on

- an upward edge: a module importing a HIGHER layer (LAYERS below, lowest first; a module
  may import its own layer and lower ones), which includes dlm -> sims;
- a script importing another script (scripts are thin: config in, one library call, out);
- a cycle between modules;
- a private name used across modules (`from x import _name`, or `x._name` on an imported
  project module);
- SystemExit in library code (dlm/, sims/) outside dlm/cli.py: the library raises
  exceptions and only scripts turn them into exit codes.
"""
from __future__ import annotations

import ast
import pathlib
from typing import NamedTuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("dlm", "sims", "scripts")

# lowest first; a module belongs to the longest prefix listed
LAYERS: list[tuple[str, ...]] = [
    ("dlm.cli", "dlm.outputs"),
    ("dlm.data",),
    ("dlm.models", "dlm.sample"),
    ("dlm.train",),
    ("dlm.causal",),
    ("dlm.representations",),
    ("dlm.rewards",),
    ("dlm.policy",),
    ("dlm.eval",),
    ("dlm.realdata",),
    ("dlm", "dlm.api", "dlm.finetune", "dlm.sweep", "dlm.reward_store", "dlm.report"),
    ("dlm.experiments",),      # pipelines compose everything below, the API included
    ("sims",),
    ("scripts",),
]

# Tolerated violations, each with its reason (empty: none). test_known_violations_still_exist
# fails on an entry that no longer occurs, so the list only shrinks.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


class Edge(NamedTuple):
    src: str          # importing module
    dst: str          # imported module
    file: str         # importing file, relative to the repo root
    line: int


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """module name -> file, for every .py under the walked packages."""
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _resolve(name: str, modules) -> str | None:
    """The longest project module that `name` (a dotted import target) lies in."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in modules:
            return cand
    return None


class _Walker(ast.NodeVisitor):
    def __init__(self, mod: str, rel: str, is_pkg: bool, modules, known):
        self.mod, self.rel, self.modules, self.known = mod, rel, modules, known
        self.package = mod if is_pkg else mod.rpartition(".")[0]
        self.edges: list[Edge] = []
        self.private: list[str] = []
        self.system_exit: list[int] = []
        self.aliases: dict[str, str] = {}      # local name -> project module it is bound to

    def _edge(self, target: str, line: int) -> str | None:
        dst = _resolve(target, self.modules)
        if dst is not None and dst != self.mod:
            self.edges.append(Edge(self.mod, dst, self.rel, line))
        return dst

    def visit_Import(self, node: ast.Import):
        for a in node.names:
            dst = self._edge(a.name, node.lineno)
            if dst is not None:
                self.aliases[a.asname or a.name.split(".")[0]] = (
                    dst if a.asname else _resolve(a.name.split(".")[0], self.modules) or dst)

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = self.package.split(".")
            pkg = pkg[:len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        for a in node.names:
            full = f"{base}.{a.name}" if base else a.name
            if full in self.modules:                     # `from pkg import submodule`
                self._edge(full, node.lineno)
                self.aliases[a.asname or a.name] = full
                continue
            dst = self._edge(base, node.lineno)
            if (dst is not None and a.name.startswith("_") and dst != self.mod
                    and (self.rel, f"{dst}.{a.name}") not in self.known):
                self.private.append(f"{self.rel}:{node.lineno}: imports private "
                                    f"{a.name!r} from {dst}")

    def visit_Attribute(self, node: ast.Attribute):
        if (isinstance(node.value, ast.Name) and node.value.id in self.aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and self.aliases[node.value.id] != self.mod):
            self.private.append(f"{self.rel}:{node.lineno}: uses private "
                                f"{self.aliases[node.value.id]}.{node.attr}")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name):
        if node.id == "SystemExit" and (self.rel, "SystemExit") not in self.known:
            self.system_exit.append(node.lineno)


def walk(root: pathlib.Path = ROOT, known=KNOWN_VIOLATIONS):
    """(edges, private-name uses, SystemExit uses) of every walked file; private names and
    SystemExit listed in `known` are left out (edges are filtered by the checks)."""
    files = project_files(root)
    edges, private, system_exit = [], [], []
    for mod, path in files.items():
        rel = path.relative_to(root).as_posix()
        w = _Walker(mod, rel, path.name == "__init__.py", files, known)
        w.visit(ast.parse(path.read_text(), filename=rel))
        edges += list(dict.fromkeys(w.edges))        # `from m import a, b`: one edge
        private += w.private
        system_exit += [f"{rel}:{line}" for line in w.system_exit]
    return edges, private, system_exit


def layer(mod: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise AssertionError(f"{mod}: in no layer of tests/test_layers.LAYERS; add it")
    return best


def _known(e: Edge) -> bool:
    return (e.file, e.dst) in KNOWN_VIOLATIONS


def upward_edges(edges) -> list[str]:
    bad = []
    for e in edges:
        if _known(e):
            continue
        if e.src.startswith("dlm") and e.dst.startswith("sims"):
            bad.append(f"{e.file}:{e.line}: dlm imports sims ({e.dst}); take the world (or "
                       "its feature map) as an argument, or register into a dlm registry")
        elif e.src.startswith("scripts") and e.dst.startswith("scripts"):
            bad.append(f"{e.file}:{e.line}: script imports script {e.dst}; move the shared "
                       "code into the library")
        elif layer(e.dst) > layer(e.src):
            bad.append(f"{e.file}:{e.line}: {e.src} (layer {layer(e.src)}) imports "
                       f"{e.dst} (layer {layer(e.dst)}), a higher layer")
    return bad


def cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not _known(e):
            graph.setdefault(e.src, set()).add(e.dst)
            graph.setdefault(e.dst, set())
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _where(edges, comp) -> str:
    inside = set(comp)
    return "; ".join(f"{e.file}:{e.line} -> {e.dst}" for e in edges
                     if e.src in inside and e.dst in inside)


def test_imports_point_down():
    edges, _, _ = walk()
    bad = upward_edges(edges)
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    edges, _, _ = walk()
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(f"{c}: {_where(edges, c)}" for c in found)


def test_no_private_names_across_modules():
    _, private, _ = walk()
    assert not private, "\n".join(private)


def test_library_raises_exceptions_not_system_exit():
    _, _, system_exit = walk()
    lib = [w for w in system_exit if not w.startswith("scripts/") and not w.startswith("dlm/cli.py")]
    assert not lib, "SystemExit in library code (raise an exception; scripts exit):\n" + "\n".join(lib)


def test_known_violations_still_exist():
    """An entry whose violation is gone must leave KNOWN_VIOLATIONS, so the list only
    shrinks and never hides a new violation of the same kind."""
    edges, private, system_exit = walk(known=set())
    present = {(e.file, e.dst) for e in edges}
    for file, what in sorted(KNOWN_VIOLATIONS):
        if what == "SystemExit":
            ok = any(w.startswith(f"{file}:") for w in system_exit)
        elif what.rpartition(".")[2].startswith("_"):
            mod, _, name = what.rpartition(".")
            ok = any(p.startswith(f"{file}:") and mod in p and name in p for p in private)
        else:
            ok = (file, what) in present
        assert ok, f"KNOWN_VIOLATIONS entry {(file, what)} no longer occurs: remove it"


def test_checker_catches_what_it_should(tmp_path):
    """The walker on a made-up tree: an upward function-local import, a relative import,
    dlm -> sims, script -> script, a cycle and a private name are all found."""
    files = {
        "dlm/__init__.py": "",
        "dlm/data/__init__.py": "",
        "dlm/data/a.py": "def f():\n    from dlm.policy import b\n",
        "dlm/policy/__init__.py": "",
        "dlm/policy/b.py": "from ..data import a\nfrom dlm.data.a import _hidden\n",
        "dlm/policy/c.py": "import sims.w\nimport dlm.data.a as A\nA._x\n",
        "sims/__init__.py": "",
        "sims/w.py": "raise SystemExit(1)\n",
        "scripts/__init__.py": "",
        "scripts/s1.py": "from scripts import s2\n",
        "scripts/s2.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges, private, system_exit = walk(tmp_path)
    assert Edge("dlm.policy.b", "dlm.data.a", "dlm/policy/b.py", 1) in edges
    bad = upward_edges(edges)
    assert any(b.startswith("dlm/data/a.py:2:") and "higher layer" in b for b in bad)
    assert any(b.startswith("dlm/policy/c.py:1: dlm imports sims") for b in bad)
    assert ["dlm.data.a", "dlm.policy.b"] in cycles(edges)
    assert any("dlm/policy/b.py:2: imports private '_hidden'" in p for p in private)
    assert any("dlm/policy/c.py:3: uses private dlm.data.a._x" in p for p in private)
    assert system_exit == ["sims/w.py:1"]
    script_edge = Edge("scripts.s1", "scripts.s2", "scripts/s1.py", 1)
    assert script_edge in edges and any(b.startswith("scripts/s1.py:1: script imports script") for b in bad)


def test_readme_layout_names_every_dlm_module():
    """README's Layout section names every module of dlm/ (a new module must be documented)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Layout\n")
    section = readme[start:readme.index("\n## ", start + 1)]
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "dlm").rglob("*.py"))
               if p.name != "__init__.py"
               and str(p.relative_to(ROOT)) not in section
               and not (p.name in section and f"{p.parent.relative_to(ROOT)}/" in section)]
    assert not missing, f"README Layout does not name: {missing}"
