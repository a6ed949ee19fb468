"""The layers of docs/architecture.md, held: a package imports only what sits below it.

Every `import dmds.X` and `from dmds.X import` in src/dmds (lazy ones inside functions too, and
those under TYPE_CHECKING: a type is a dependency as well) is read with `ast` and checked against
the table below. A lower layer importing a higher one fails with the file, the line and the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "dmds"

#: What each top-level part of dmds may import besides itself; docs/architecture.md draws it.
FOUNDATION = {"errors", "settings", "metrics"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "settings": set(),
    "metrics": set(),
    "protocols": {"errors"},
    "core": FOUNDATION,
    "stores": {*FOUNDATION, "core"},
    "web": set(),
    "soap": {"errors"},
    "transports": {*FOUNDATION, "core", "protocols", "web"},
    "admin": {*FOUNDATION, "core", "transports"},
    "server": {*FOUNDATION, "core", "protocols", "stores", "transports", "admin", "soap", "web"},
    "client": {"errors", "protocols"},
    "gui": {"errors", "protocols", "client", "soap"},
    "cluster": {*FOUNDATION},
    "bench": {"errors", "settings", "protocols", "client", "soap", "cluster"},
    "cli": {
        *FOUNDATION, "core", "protocols", "stores", "transports", "admin", "server", "soap",
        "client", "gui", "bench", "cluster",
    },
}  # fmt: skip


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name.split(".")[1]) for line, name in found if name.startswith("dmds.")]


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.parent != SRC or p.name != "__init__.py")


def test_every_part_of_dmds_is_in_the_table() -> None:
    parts = {_part(p) for p in _modules()}
    assert parts - {"__main__"} <= set(ALLOWED), sorted(parts - set(ALLOWED))


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_a_part_imports_only_the_layers_below_it(part: str) -> None:
    wrong = [
        f"{path.relative_to(SRC.parent)}:{line} imports dmds.{target}"
        for path in _modules()
        if _part(path) == part
        for line, target in _imports(path)
        if target != part and target not in ALLOWED[part]
    ]
    assert not wrong, f"dmds.{part} may import only {sorted(ALLOWED[part])}:\n" + "\n".join(wrong)


def test_the_check_finds_a_lower_layer_importing_a_higher_one(tmp_path: Path) -> None:
    """The reader sees imports of every kind, or the test above could never fail."""
    module = tmp_path / "m.py"
    module.write_text(
        "import dmds.core.service\n"
        "from dmds.transports import lifecycle\n"
        "def f():\n"
        "    from dmds.gui import window\n"
        "from . import sibling\n",
        encoding="utf-8",
    )
    assert [target for _, target in _imports(module)] == ["core", "transports", "gui"]
