"""Packaging: the folders cli/ and data_prep/ are installed and imported as talk3d_cli and
talk3d_prep, so the wheel puts no generic top-level name (``cli``) into site-packages."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALLED_AS = {"talk3d_cli": "cli", "talk3d_prep": "data_prep"}
TOP_LEVEL = {"talk3d", "talk3d_cli", "talk3d_prep", "cuda_ext"}


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str) -> Path:
    top, *rest = package.split(".")
    return ROOT / INSTALLED_AS.get(top, top) / Path(*rest)


def test_package_names_and_console_script() -> None:
    cfg = _setuptools()
    assert cfg["package-dir"] == INSTALLED_AS
    assert {name.split(".")[0] for name in cfg["packages"]} == TOP_LEVEL
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"talk3d": "talk3d_cli.main:app"}


def test_every_package_folder_is_listed() -> None:
    """``packages`` is an explicit list (package-dir renames cannot be found): a new subpackage
    missing from it would be left out of the wheel while an editable install still worked."""
    listed = set(_setuptools()["packages"])
    found = set()
    for top in TOP_LEVEL:
        base = _folder(top)
        for init in base.rglob("__init__.py"):
            found.add(".".join([top, *init.parent.relative_to(base).parts]))
    assert listed == found
    assert all((_folder(name) / "__init__.py").is_file() for name in listed)


def _old_names(path: Path) -> list[str]:
    """Imports (and module-name strings such as ``"data_prep.pipeline"``) of ``cli`` / ``data_prep``."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            names = [node.value] if node.value.split(".")[0] in INSTALLED_AS.values() else []
        else:
            continue
        hits += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                 if n.split(".")[0] in INSTALLED_AS.values()]
    return hits


def test_code_uses_the_installed_names() -> None:
    folders = ["talk3d", "cli", "data_prep", "cuda_ext", "tests", "benchmarks"]
    hits = [hit for folder in folders for path in sorted((ROOT / folder).rglob("*.py")) for hit in _old_names(path)]
    assert not hits, "\n".join(hits)
