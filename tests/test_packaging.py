"""What pyproject.toml promises about the package: the runtime dependencies are what the code
imports and nothing of the test tooling (pytest, Playwright, mmdb-writer, the linters live in
the `test` extra); the shipped profiles and the country database are package data found
through importlib.resources. tests/test_install.py builds and installs the wheel itself."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata, resources

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def imported_distributions() -> set[str]:
    """The distributions whose modules anonproxy/ imports (other than the standard library)."""
    tops = set()
    for path in (ROOT / "anonproxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
    tops -= set(sys.stdlib_module_names) | {"anonproxy", "__future__"}
    owners = metadata.packages_distributions()
    return {canonicalize_name(d) for top in tops for d in owners.get(top, [top])}


def with_their_requirements(wanted: set[str]) -> set[str]:
    """`wanted` and everything their installed metadata requires (no extras), transitively."""
    found, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return found


def test_runtime_dependencies_carry_no_test_tooling():
    runtime = names(PROJECT["dependencies"])
    test = names(PROJECT["optional-dependencies"]["test"])
    assert {"pytest", "pytest-asyncio", "hypothesis", "playwright", "mmdb-writer", "ruff", "mypy",
            "import-linter"} <= test
    assert not runtime & test


def test_what_the_package_imports_comes_with_its_runtime_dependencies():
    runtime = names(PROJECT["dependencies"])
    imported = imported_distributions()
    assert imported <= with_their_requirements(runtime), imported - with_their_requirements(runtime)
    assert runtime <= imported  # and none is declared that nothing imports


def test_shipped_profiles_and_the_database_are_package_data():
    from anonproxy.config.profiles import SHIPPED_DIR
    from anonproxy.policy.geo import BUNDLED

    assert resources.files("anonproxy.profiles") == SHIPPED_DIR
    assert {p.name for p in SHIPPED_DIR.glob("*.toml")} == {"default.toml", "direct.toml"}
    assert resources.files("anonproxy").joinpath("data", "country.mmdb") == BUNDLED
    assert BUNDLED.is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("anonproxy/**/__init__.py")}
    assert set(data["packages"]) == found  # a package left out would be missing from the wheel
    assert data["package-data"]["anonproxy.profiles"] == ["*.toml"]
    assert {"data/country.mmdb", "data/README", "data/LICENSE"} <= set(
        data["package-data"]["anonproxy"])
