"""The status page `/`: one card per camera, problem cameras first, plain HTML.

Self-contained (inline CSS, one tiny inline script allowed by its hash in the CSP, no CDN),
refreshes itself every 30 s. Everything shown is escaped; camera URLs are never shown, as
they may carry credentials. The script marks `<body data-thumbs="loaded">` once every
thumbnail in view has decoded, which the headless-browser test waits for.

At 20,000 cameras one page of every card would be megabytes of HTML and 20,000 thumbnail
requests: cards come `PAGE_SIZE` at a time (`?page=2`), problem cameras first, or only
those (`?show=problems`), and thumbnails load as they scroll into view (`loading="lazy"`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from lyoncam_daemon.observe.stats import Condition, State, severity

REFRESH_S = 30
#: Cards per page: a few screens, a few hundred KB of thumbnails when scrolled through.
PAGE_SIZE = 60

_SCRIPT = (
    "function lyoncamMark(){var i=Array.prototype.slice.call(document.images).filter("
    "function(m){return m.getBoundingClientRect().top<window.innerHeight;});"
    "if(i.every(function(m){return m.complete&&m.naturalWidth>0;}))"
    "{document.body.setAttribute('data-thumbs','loaded');}}"
    "window.addEventListener('load',lyoncamMark);"
)
SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
#: No source but ours; the one inline script by its hash; inline styles only.
CSP = (f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
       f"script-src 'sha256-{SCRIPT_HASH}'; base-uri 'none'; form-action 'none'")

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111}
header{background:#1f2937;color:#fff;padding:10px 16px;display:flex;gap:24px;flex-wrap:wrap}
header b{font-size:16px}.banner{background:#b91c1c;color:#fff;padding:8px 16px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px;padding:12px}
.card{background:#fff;border-radius:6px;overflow:hidden;border-top:6px solid #16a34a}
.card.warn{border-color:#d97706}.card.bad{border-color:#dc2626}.card.idle{border-color:#9ca3af}
.thumb{width:100%;aspect-ratio:16/9;object-fit:cover;display:block;background:#e5e7eb}
.nothumb{width:100%;aspect-ratio:16/9;display:flex;align-items:center;justify-content:center;
background:#e5e7eb;color:#6b7280}
.body{padding:8px 10px}.id{font-weight:600}.name{color:#4b5563}
.badge{display:inline-block;padding:0 6px;border-radius:4px;background:#e5e7eb;margin-right:4px}
dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:6px 0 0}
dt{color:#6b7280}dd{margin:0}
nav{padding:8px 16px;display:flex;gap:16px}nav a{color:#1d4ed8}
"""


@dataclass(frozen=True)
class Card:
    camera_id: str
    name: str
    state: State
    condition: Condition
    last_stored_at: str | None
    #: "3 min ago", computed by the caller (it knows the time).
    last_stored_ago: str
    frames_24h: int
    errors: int
    error_detail: str
    #: Cache-busting token of the thumbnail (changes with the latest frame), None: no frame.
    thumb_token: str | None


@dataclass(frozen=True)
class Header:
    version: str
    cameras: int
    ok: int
    disk_free: str
    problems: Sequence[str]


@dataclass(frozen=True)
class Nav:
    """Which cards this page shows: page `page` (1-based) of `pages`, of every camera or
    only the `problem_cameras` ones."""

    page: int = 1
    pages: int = 1
    only_problems: bool = False
    problem_cameras: int = 0


def ordered(cards: Sequence[Card]) -> list[Card]:
    return sorted(cards, key=lambda c: (severity(c.state, c.condition), c.camera_id))


def _card_html(card: Card) -> str:
    level = {0: "bad", 1: "bad", 2: "warn", 3: "idle"}.get(
        severity(card.state, card.condition), "ok")
    cid = escape(card.camera_id)
    if card.thumb_token is not None:
        src = f"/cameras/{quote(card.camera_id)}/latest.jpg?v={quote(card.thumb_token)}"
        thumb = (f'<img class="thumb" src="{escape(src)}" alt="latest frame of {cid}" '
                 'loading="lazy">')
    else:
        thumb = '<div class="nothumb">no frame stored yet</div>'
    last = (f"{escape(card.last_stored_at)} ({escape(card.last_stored_ago)})"
            if card.last_stored_at else "never")
    return (
        f'<section class="card {level}" data-camera="{cid}">{thumb}<div class="body">'
        f'<div class="id">{cid}</div><div class="name">{escape(card.name) or "&nbsp;"}</div>'
        f'<div><span class="badge">{escape(card.state.value)}</span>'
        f'<span class="badge">{escape(card.condition.value)}</span></div>'
        f"<dl><dt>last frame</dt><dd>{last}</dd>"
        f"<dt>last 24 h</dt><dd>{card.frames_24h} frame{'' if card.frames_24h == 1 else 's'}"
        "</dd>"
        f'<dt>errors</dt><dd title="{escape(card.error_detail)}">{card.errors}'
        f"{' (' + escape(card.error_detail) + ')' if card.error_detail else ''}</dd></dl>"
        "</div></section>"
    )


def _nav_html(nav: Nav) -> str:
    show = "&show=problems" if nav.only_problems else ""
    links = [f"page {nav.page} of {nav.pages}"]
    if nav.page > 1:
        links.insert(0, f'<a href="?page={nav.page - 1}{show}">previous</a>')
    if nav.page < nav.pages:
        links.append(f'<a href="?page={nav.page + 1}{show}">next</a>')
    links.append('<a href="?">every camera</a>' if nav.only_problems else
                 f'<a href="?show=problems">only the {nav.problem_cameras} with a problem</a>')
    return f"<nav>{''.join(f'<span>{link}</span>' for link in links)}</nav>"


def render(header: Header, cards: Sequence[Card], nav: Nav | None = None) -> str:
    """The page; `cards` are the page's, already chosen (`PAGE_SIZE` at most)."""
    banners = "".join(f'<div class="banner">{escape(p)}</div>' for p in header.problems)
    body = "".join(_card_html(c) for c in ordered(cards))
    navigation = _nav_html(nav) if nav is not None else ""
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>lyoncam: {header.ok}/{header.cameras} ok</title><style>{_CSS}</style>"
        f"<script>{_SCRIPT}</script></head><body>"
        f"<header><b>lyoncam</b><span>{header.ok} of {header.cameras} cameras ok</span>"
        f"<span>disk free: {escape(header.disk_free)}</span>"
        f"<span>version {escape(header.version)}</span></header>{banners}{navigation}"
        f"<main>{body}</main>{navigation}</body></html>"
    )


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, round(seconds))} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 172800:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def page_ids(ordered_ids: Sequence[str], problems: dict[str, int], nav: Nav) -> list[str]:
    """The camera ids of page `nav.page`: problem cameras first (worst first, then by id),
    then, unless `nav.only_problems`, healthy ones by id. Costs the problem cameras and one
    pass over `ordered_ids` at most, never a card per camera."""
    worst_first = sorted(problems, key=lambda cid: (problems[cid], cid))
    start, stop = (nav.page - 1) * PAGE_SIZE, nav.page * PAGE_SIZE
    chosen = worst_first[start:stop]
    if nav.only_problems or len(chosen) == PAGE_SIZE:
        return chosen
    skip = max(0, start - len(worst_first))  # healthy cameras on earlier pages
    for cid in ordered_ids:
        if cid in problems:
            continue
        if skip:
            skip -= 1
            continue
        chosen.append(cid)
        if len(chosen) == PAGE_SIZE:
            break
    return chosen


def pages_of(cameras: int) -> int:
    return max(1, -(-cameras // PAGE_SIZE))

