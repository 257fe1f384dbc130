"""The house rules of the package layout: each subpackage imports only the floors below it.

The table is the one in CONTRIBUTING.md; an import that runs back up a floor (or a new
subpackage nobody placed) fails here, lazy imports inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lyoncam_daemon

PACKAGE = Path(lyoncam_daemon.__file__).parent
#: Ground-floor modules every floor may use: the version and the commands' shared kit.
SHARED = {"lyoncam_daemon", "lyoncam_daemon.arguments"}
MAY_IMPORT: dict[str, set[str]] = {
    "config": set(),
    "frames": {"config"},
    "storage": {"config"},
    "enrich": {"config", "frames"},
    "observe": {"config", "frames", "storage"},
    "curation": {"config", "frames", "storage", "enrich", "observe"},
    "capture": {"config", "frames", "storage", "enrich", "observe", "curation"},
    "labelstudio": {"config", "storage", "observe", "curation"},
    "devtools": {"config", "frames"},
}
TOP = {"cli", "__main__", "__init__", "arguments"}


def floor_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every lyoncam module `path` imports, at any depth of the file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lyoncam_daemon":
                found += [(node.lineno, f"lyoncam_daemon.{a.name}") for a in node.names
                          if a.name != "__version__"]
            elif node.module.startswith("lyoncam_daemon."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names
                      if a.name.startswith("lyoncam_daemon.")]
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_sits_on_a_known_floor() -> None:
    floors = {p.relative_to(PACKAGE).parts[0] for p in modules()}
    unknown = {f for f in floors if f.removesuffix(".py") not in MAY_IMPORT | dict.fromkeys(TOP)}
    assert unknown == set(), f"place these in MAY_IMPORT (and CONTRIBUTING.md): {unknown}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_back_up_a_floor(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if own in TOP - {"arguments"}:
        return  # cli.py and the package's own entry points wire everything
    allowed = MAY_IMPORT.get(own, set()) | {own}
    wrong = [f"line {line}: {module}" for line, module in imports_of(path)
             if module not in SHARED and floor_of(module) not in allowed]
    assert wrong == [], f"{own}/ may import only {sorted(allowed)}"


def test_the_rule_catches_an_import_up_a_floor(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lyoncam_daemon.capture.daemon import Daemon\n")
    assert imports_of(bad) == [(2, "lyoncam_daemon.capture.daemon")]
    assert floor_of("lyoncam_daemon.capture.daemon") not in MAY_IMPORT["frames"]
