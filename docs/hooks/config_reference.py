"""MkDocs hook: the configuration reference, generated from the config model at build time.

docs/configuration.md holds the prose and two markers; the tables between them come from
lyoncam_daemon.config.reference, so a key or a default shown on the site is always the code's.
"""

from __future__ import annotations

from typing import Any

from mkdocs.exceptions import PluginError

from lyoncam_daemon.config.reference import fill

PAGE = "configuration.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    try:
        return fill(markdown)
    except ValueError as exc:
        raise PluginError(f"{PAGE}: {exc}") from None
