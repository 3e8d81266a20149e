"""The layer contract: a module of headfields imports only from its own tier or a lower one, lazy imports included.

The tiers, lowest first, as docs/architecture.md's "Tiers" states them:

    foundation  checks, kernels, networks, configs, outputs, backends/cpu/
    base        geometry/, parametric/ (FLAME, SMPL-X, heads)
    parts       deformers/, encoders/, decoders/
    fields      fields, renderers/, cameras/, losses, metrics
    data        the frame container, the capture readers/writers and the splat PLY
    synthetic   the synthetic heads, scans and videos
    training    the one loop, its checkpoints; fitting/
    models      the paper assemblies, each with its method; the registry
    apps        apps/ (runs, commands, viewer, export, driving, media, a run's GaussianAvatars files), tracking/

Every module under headfields/ is read with ``ast``, nothing imported: every ``import`` and ``from ... import`` in
it (at module level, inside functions, under ``if TYPE_CHECKING:``; relative ones made absolute) and every module
named by a string to ``importlib.import_module``. :data:`TIERS` places
each top-level package and module; :data:`KNOWN_UPWARD` lists today's upward imports, to be emptied a tier a commit.
"""

import ast
import re
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).parents[2] / "headfields"

ORDER = ("foundation", "base", "parts", "fields", "data", "synthetic", "training", "models", "apps")

# Every top-level package and module of headfields/ and its tier. A new one is placed here, in the tier of its job.
TIERS = {
    "backends": "foundation",  # backends/cpu/: what exists only to make a small CPU fast
    "checks": "foundation",
    "configs": "foundation",
    "device_paths": "foundation",  # which code path a device takes; cuda_paths() sends the CPU down CUDA's
    "group_tiles": "foundation",  # rows in tiles of one group: an ensemble's members, one product a layer
    "kernels": "foundation",
    "networks": "foundation",
    "outputs": "foundation",
    "progress": "foundation",  # a progress bar or plain lines: a utility like outputs, for the loop and commands
    "geometry": "base",
    "parametric": "base",
    "decoders": "parts",
    "deformers": "parts",
    "encoders": "parts",
    "cameras": "fields",
    "experimental": "fields",  # opt-in code no device runs by default; nothing in the core imports it
    "fields": "fields",
    "losses": "fields",
    "metrics": "fields",
    "renderers": "fields",
    "data": "data",
    "heads": "data",  # a capture's frames -> the tracked Head (the Head itself: base, parametric/), mesh depth of rays
    "synthetic": "synthetic",
    "training": "training",
    "fitting": "training",  # fitting a few quantities to frames beside frozen networks: pose, preimages, stages
    "models": "models",
    "__init__": "apps",  # the package's front page: headfields.load_run, from runs
    "__main__": "apps",  # python -m headfields
    "apps": "apps",  # runs, the commands, the viewer, export, reenactment, media, the video tracker
}

# Today's upward imports, (importer, imported module), by the importer's tier. Moving a tier deletes its lines.
KNOWN_UPWARD: set[tuple[str, str]] = set()

# Calls whose string argument names a module they import: importlib's.
IMPORTING_CALLS = {"import_module"}


class Import(NamedTuple):
    importer: str  # headfields.x.y
    imported: str  # the module of headfields the import runs: the longest prefix of the imported name that is one
    path: Path
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PATHS = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _top(module: str) -> str:
    """The key of TIERS: ``headfields.data.frames`` -> ``data``; ``headfields`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _tier(module: str) -> str:
    return TIERS[_top(module)]


def _rank(module: str) -> int:
    return ORDER.index(_tier(module))


def imported_names(module: str, is_package: bool, source: str):
    """(dotted name, line) of each import in ``source``, the code of ``module``, relative ones made absolute.
    ``from A import b`` gives ``A.b``: the submodule where there is one, else cut back to ``A`` by the caller."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = [*package[: len(package) - node.level + 1], node.module] if node.level else [node.module]
            base = ".".join(part for part in base if part)
            yield from ((base if alias.name == "*" else f"{base}.{alias.name}", node.lineno) for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if func in IMPORTING_CALLS:
                strings = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
                yield from ((name, node.lineno) for name in strings if name.split(".")[0] == "headfields")


def _reached(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "headfields":
        return None
    return next(".".join(parts[:end]) for end in range(len(parts), 0, -1) if ".".join(parts[:end]) in PATHS)


def _imports() -> list[Import]:
    found = set()
    for module, path in PATHS.items():
        for name, line in imported_names(module, path.name == "__init__.py", path.read_text()):
            reached = _reached(name)
            if reached is not None and reached != module:
                found.add(Import(module, reached, path, line))
    return sorted(found)


IMPORTS = _imports()
UPWARD = [i for i in IMPORTS if _rank(i.imported) > _rank(i.importer)]


def test_every_top_level_package_and_module_has_a_tier():
    present = {_top(module) for module in PATHS}
    missing = sorted(present - set(TIERS))
    assert not missing, (
        f"add {missing} to TIERS in tests/project/test_layers.py, in the tier of its job (docs/architecture.md, 'Tiers')"
    )
    gone = sorted(set(TIERS) - present)
    assert not gone, f"TIERS names what headfields/ no longer has; delete {gone}"
    assert set(TIERS.values()) <= set(ORDER)


def test_imports_go_to_the_same_tier_or_below():
    new = [
        f"{i.path.relative_to(PACKAGE.parent)}:{i.line}: {i.importer} ({_tier(i.importer)}) imports "
        f"{i.imported} ({_tier(i.imported)})"
        for i in UPWARD
        if (i.importer, i.imported) not in KNOWN_UPWARD
    ]
    stale = sorted(KNOWN_UPWARD - {(i.importer, i.imported) for i in UPWARD})
    problems = ["imports from a higher tier (move the code down, or its user up):", *new] if new else []
    problems += ["no longer upward imports; delete them from KNOWN_UPWARD:", *map(str, stale)] if stale else []
    assert not problems, "\n".join(problems)


def test_nothing_outside_experimental_imports_it():
    """headfields.experimental holds what no device runs by default, behind an opt-in a user calls: the library's
    core never reaches it."""
    found = [
        f"{i.path.relative_to(PACKAGE.parent)}:{i.line}: {i.importer} imports {i.imported}"
        for i in IMPORTS
        if _top(i.imported) == "experimental" and _top(i.importer) != "experimental"
    ]
    assert not found, "\n".join(found)


def test_no_import_cycle_between_top_level_packages_and_modules():
    """Without today's known upward imports, the top-level packages and modules import each other without a
    cycle: none between tiers (a cycle between tiers needs an upward import), and none between two of one tier."""
    graph = defaultdict(dict)  # top -> {imported top: the first such import}
    for i in IMPORTS:
        if (i.importer, i.imported) not in KNOWN_UPWARD and _top(i.importer) != _top(i.imported):
            graph[_top(i.importer)].setdefault(_top(i.imported), i)
    done, path = set(), []

    def visit(top: str) -> list[str] | None:  # depth first: a cycle, as the names along it, or None
        if top in path:
            return [*path[path.index(top) :], top]
        if top in done:
            return None
        path.append(top)
        cycle = next((c for c in map(visit, sorted(graph[top])) if c), None)
        path.pop()
        done.add(top)
        return cycle

    cycle = next((c for c in map(visit, sorted(TIERS)) if c), None)
    assert cycle is None, "import cycle between top-level packages and modules:\n" + "\n".join(
        f"{a} ({TIERS[a]}) -> {b} ({TIERS[b]}): {i.path.relative_to(PACKAGE.parent)}:{i.line} imports {i.imported}"
        for a, b in pairwise(cycle)
        for i in [graph[a][b]]
    )


def test_the_parser_sees_lazy_relative_type_checking_and_named_imports():
    source = """
import headfields.geometry.mesh as mesh
from typing import TYPE_CHECKING
from ..checks import check_float
from . import base
from .base import Deformer
from headfields import parametric
if TYPE_CHECKING:
    from ..synthetic import SyntheticVideoConfig
def f():
    from ..models.registry import MODELS
    return importlib.import_module("headfields.apps.runs")
"""
    names = {name for name, _ in imported_names("headfields.deformers.inverse_skinning", False, source)}
    assert names == {
        "headfields.geometry.mesh",
        "typing.TYPE_CHECKING",
        "headfields.checks.check_float",
        "headfields.deformers.base",
        "headfields.deformers.base.Deformer",
        "headfields.parametric",
        "headfields.synthetic.SyntheticVideoConfig",  # under TYPE_CHECKING
        "headfields.models.registry.MODELS",  # in a function
        "headfields.apps.runs",  # importlib.import_module(...)
    }
    in_package = {name for name, _ in imported_names("headfields.data", True, "from . import frames\nfrom .. import heads")}
    assert in_package == {"headfields.data.frames", "headfields.heads"}
    assert _reached("headfields.checks.check_float") == "headfields.checks" and _reached("torch.nn") is None
    # In the package itself: many imports, and the front page's lazy ``from . import runs`` inside __getattr__.
    assert len(IMPORTS) > 500 and len({i.importer for i in IMPORTS}) > 100, len(IMPORTS)
    edges = {(i.importer, i.imported) for i in IMPORTS}
    assert ("headfields", "headfields.apps.runs") in edges, "headfields/__init__.py's lazy import of runs is not seen"


def test_the_architecture_page_states_the_tiers_this_test_holds():
    """docs/architecture.md's "Tiers" table names the tiers in ORDER, and each package and module in its tier's row."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text().split("## Tiers")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| (\w+) \| (.+) \|$", page, re.M))
    rows.pop("tier", None)  # the header
    assert tuple(rows) == ORDER
    for name, tier in TIERS.items():
        if not name.startswith("__"):
            assert f"`{name}" in rows[tier], f"docs/architecture.md: {name} missing from the {tier} row"
