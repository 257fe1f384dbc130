"""MkDocs hook: the configuration reference, generated from the config model at build time.

docs/configuration.md holds the prose and a marker; the tables come from
lyoncam_daemon.config.reference, so a key or a default shown on the site is always the code's.
"""

from __future__ import annotations

from typing import Any

from mkdocs.exceptions import PluginError

from lyoncam_daemon.config.reference import MARKER, config_reference

PAGE = "configuration.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if markdown.count(MARKER) != 1:
        raise PluginError(f"{PAGE} must hold the marker {MARKER} exactly once")
    return markdown.replace(MARKER, config_reference())
