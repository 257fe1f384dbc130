"""The documentation: the configuration reference is the model's, the site builds strictly,
and the README's links lead somewhere.

The site is built for real (MkDocs, the repository's mkdocs.yml and hook) in a copy of
docs/, so the strictness checks can break a copy, never the checkout.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from lyoncam_daemon import cli
from lyoncam_daemon.config.model import (
    CameraConfig,
    Config,
    Count,
    Duration,
    HttpSettings,
    Tuning,
    parse_config,
)
from lyoncam_daemon.config.reference import END_MARKER, MARKER, config_reference, fill
from tests.test_layout import MAY_IMPORT

ROOT = Path(__file__).resolve().parent.parent
_ROW = re.compile(r"^\| `([^`]+)` \| ([^|]*) \| ([^|]*) \| (.*) \|$")


def _rows(markdown: str) -> dict[str, tuple[str, str]]:
    """`key` → (default cell, description) of every table row of the reference."""
    rows: dict[str, tuple[str, str]] = {}
    for line in markdown.splitlines():
        if m := _ROW.match(line):
            assert m[1] not in rows, f"{m[1]} listed twice"
            rows[m[1]] = (m[3].strip(), m[4].strip())
    return rows


def _sections(config: type[Config]) -> dict[str, type[BaseModel]]:
    """Each `key.` prefix of the reference and the model its rows come from."""
    found: dict[str, type[BaseModel]] = {"": config}
    for name, field in config.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and not issubclass(kind, Tuning):
            found[f"{name}."] = kind
    return found


def _plain(value: Any) -> Any:
    """A default as yaml.safe_load gives it back: lists for tuples, text for paths and shards."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _expected(config: type[Config]) -> dict[str, Any]:
    """Every key the reference must list, with the model's default (or "required")."""
    expected: dict[str, Any] = {}
    for prefix, model in _sections(config).items():
        for name, field in model.model_fields.items():
            kind = field.annotation
            if prefix == "" and (name == "cameras" or (
                    isinstance(kind, type) and issubclass(kind, BaseModel))):
                continue  # sections and the camera list have tables of their own
            expected[prefix + name] = "required" if field.is_required() else \
                _plain(field.get_default(call_default_factory=True))
    camera = config.model_fields["cameras"].annotation.__args__[0]  # type: ignore[union-attr]
    for name, field in camera.model_fields.items():
        expected[name] = "required" if field.is_required() else _plain(field.default)
    return expected


def _shown(cell: str) -> Any:
    if cell == "required":
        return cell
    assert cell.startswith("`") and cell.endswith("`"), cell
    return yaml.safe_load(cell[1:-1])


def test_the_reference_lists_every_key_with_the_models_default() -> None:
    rows = _rows(config_reference())
    expected = _expected(Config)
    assert set(rows) == set(expected)
    for key, default in expected.items():
        assert _shown(rows[key][0]) == default, key
        assert rows[key][1], f"{key} has no description"
    # Spot checks in the form a reader sees them.
    assert rows["http.max_concurrent"][0] == "`8`"
    assert rows["data_dir"][0] == "`data`"
    assert rows["retention.max_bytes"][0] == "`null`"
    assert rows["id"][0] == "required"
    # Every section and the `defaults:` keys are there too.
    text = config_reference()
    for name in Config.model_fields:
        assert f"### `{name}`" in text or f"| `{name}` |" in text, name
    for name in Tuning.model_fields:
        assert f"`{name}`" in text.split("### `defaults`")[1].split("###")[0], name


def test_a_changed_default_changes_the_reference() -> None:
    class Http(HttpSettings):
        max_concurrent: Count = Field(13, ge=1)
        """Requests in flight, all cameras together."""

    class Camera(CameraConfig):
        interval: Duration = 95.0
        """Seconds between polls."""

    class Changed(Config):
        http: Http = Http()
        """How lyoncam talks to the camera servers."""
        cameras: tuple[Camera, ...]
        """The cameras."""

    rows = _rows(config_reference(Changed))
    assert rows["http.max_concurrent"][0] == "`13`"
    assert rows["interval"][0] == "`95`"
    assert _rows(config_reference())["http.max_concurrent"][0] == "`8`"
    for key, default in _expected(Changed).items():
        assert _shown(rows[key][0]) == default, key


def test_a_key_without_a_description_is_refused() -> None:
    class Http(HttpSettings):
        undocumented: int = 1

    class Changed(Config):
        http: Http = Http()
        """How lyoncam talks to the camera servers."""

    with pytest.raises(ValueError, match=r"Http\.undocumented has no description"):
        config_reference(Changed)


def test_the_configuration_page_holds_the_markers_and_its_example_passes_check(
        tmp_path: Path) -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    filled = fill(page)
    assert MARKER not in filled and END_MARKER not in filled
    assert config_reference() in filled
    assert "Reading this file without building it" not in filled  # the GitHub-only note
    with pytest.raises(ValueError, match="once each"):
        fill(page.replace(END_MARKER, ""))
    example = page.split("A small file:", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(example, "example", tmp_path)
    assert [c.id for c in config.cameras] == ["CW1L8114", "CW2L8114"]


def _copy_site(tmp_path: Path) -> Path:
    site = tmp_path / "repo"
    site.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", site)
    shutil.copytree(ROOT / "docs", site / "docs")
    return site


def _build(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(site / "out")], cwd=site, capture_output=True, text=True, timeout=120)


def test_the_site_builds_with_the_generated_reference(tmp_path: Path) -> None:
    site = _copy_site(tmp_path)
    built = _build(site)
    assert built.returncode == 0, built.stderr
    html = (site / "out" / "configuration" / "index.html").read_text()
    assert MARKER not in html
    assert "<code>http.max_concurrent</code>" in html
    assert "<code>retention.min_free_bytes</code>" in html


@pytest.mark.parametrize("breakage, complaint", [
    (("setup.md", "\n[a page](no-such-page.md)\n"), "no-such-page.md"),
    (("setup.md", "\n[a heading](commands.md#no-such-heading)\n"), "#no-such-heading"),
    (("orphan.md", "# Not in nav\n"), "orphan.md"),
])
def test_a_broken_link_or_a_page_left_out_of_nav_fails_the_build(
        tmp_path: Path, breakage: tuple[str, str], complaint: str) -> None:
    site = _copy_site(tmp_path)
    page, text = breakage
    with (site / "docs" / page).open("a") as f:
        f.write(text)
    built = _build(site)
    assert built.returncode != 0
    assert complaint in built.stderr


def _github_anchor(heading: str) -> str:
    """The anchor GitHub (and, for these headings, MkDocs) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readmes_links_lead_to_files_and_headings() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 11, local  # one per command at least
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links to {link}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.MULTILINE)
            assert anchor in {_github_anchor(h) for h in headings}, \
                f"README links to {link}: no such heading"


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def _sections_of(page: str) -> dict[str, str]:
    """`## `name`` heading → the text under it, up to the next such heading."""
    parts = re.split(r"^## `([a-z]+)`\n", page, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_command_and_option_is_documented() -> None:
    documented = _sections_of((ROOT / "docs" / "commands.md").read_text())
    readme = (ROOT / "README.md").read_text()
    names = [command.name for command in cli.commands()]
    assert sorted(documented) == sorted(names)
    for command in cli.commands():
        parser = argparse.ArgumentParser(prog=command.name)
        command.add_arguments(parser)
        options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", parser.format_usage()))
        assert options, command.name
        missing = {o for o in options if o not in documented[command.name]}
        assert not missing, f"docs/commands.md: `{command.name}` does not show {missing}"
        assert f"[`{command.name}`](docs/commands.md#{command.name})" in readme, command.name


def test_the_architecture_page_shows_the_floors_the_layout_test_enforces() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## What each may import", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    shown: dict[str, set[str]] = {}
    for line in rows:
        floor, allowed = (cell.strip() for cell in line.strip("|").split("|"))
        shown[floor.strip("`")] = set(re.findall(r"`(\w+)`", allowed))
    shown.pop("cli.py")
    assert shown == MAY_IMPORT
