"""`report --html`: one self-contained page (no network, no scripts from elsewhere).

A heatmap of frames per camera x daypart x weather (empty cells grey, thin ones outlined),
frames per day as an inline SVG bar chart, and a few thumbnails per cell as `data:` URIs,
so the file can be mailed or opened offline years later.
"""

from __future__ import annotations

import base64
import io
import math
import sqlite3
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

from lyoncam_daemon.curation.dataset import cell_examples

THUMB = (160, 90)

STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ddd;padding:2px 5px;text-align:right;min-width:22px}
th{background:#f4f4f4;font-weight:600}
td.empty{background:#eee;color:#aaa;text-align:center}
td.thin{outline:2px solid #e08000;outline-offset:-2px}
.cell{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}
.cell img{display:block;width:160px;height:90px;object-fit:cover;margin:2px 0}
.cell span{font-size:12px;color:#555}
"""

#: Counts the thumbnails Chromium actually decoded into `data-thumbs-loaded` on <body>:
#: the page's own proof that it renders (tests read it through --dump-dom).
SCRIPT = """addEventListener('load',()=>{document.body.dataset.thumbsLoaded=
[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length});"""


def thumbnail(path: Path) -> str | None:
    """A small JPEG of the frame as a data: URI; None if the frame cannot be read."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", THUMB)  # DCT-scaled decode: a fraction of a full one
            small = im.convert("RGB")
            small.thumbnail(THUMB)
            out = io.BytesIO()
            small.save(out, "JPEG", quality=70)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def _colour(n: int, top: int) -> str:
    """Log scale from pale to deep blue (a cell of 10 and one of 10,000 both show), with text
    that stays readable on it."""
    if n <= 0 or top <= 0:
        return "background:#eee"
    t = math.log1p(n) / math.log1p(top)
    light = round(92 - 55 * t)
    return f"background:hsl(212,70%,{light}%);color:{'#fff' if light < 60 else '#222'}"


def _heatmap(rep: Mapping[str, Any]) -> str:
    cells: Sequence[Mapping[str, Any]] = rep["cells"]
    dayparts = list(dict.fromkeys(c["daypart"] for c in cells))
    weathers = list(dict.fromkeys(c["weather"] for c in cells))
    top = max((c["frames"] for c in cells), default=0)
    by = {(c["camera"], c["daypart"], c["weather"]): c for c in cells}
    head1 = "".join(f'<th colspan="{len(weathers)}">{escape(d)}</th>' for d in dayparts)
    head2 = "".join(f'<th title="{escape(w)}">{escape(w[:4])}</th>'
                    for _ in dayparts for w in weathers)
    rows = []
    for camera in dict.fromkeys(c["camera"] for c in cells):
        tds = []
        for d in dayparts:
            for w in weathers:
                c = by[(camera, d, w)]
                n, status = c["frames"], c["status"]
                label = f"{camera} {d} {w}: {n} frames"
                text = "·" if n == 0 else str(n)
                tds.append(f'<td class="{status}" title="{escape(label)}" '
                           f'style="{_colour(n, top)}">{text}</td>')
        rows.append(f"<tr><th>{escape(camera)}</th>{''.join(tds)}</tr>")
    return (f'<table id="heatmap"><tr><th rowspan="2">camera</th>{head1}</tr>'
            f"<tr>{head2}</tr>{''.join(rows)}</table>")


def _days_chart(days: Mapping[str, int]) -> str:
    if not days:
        return "<p>No frames yet.</p>"
    width, height, top = 720, 160, max(days.values())
    bar = width / len(days)
    bars = []
    for i, (day, n) in enumerate(days.items()):
        h = height * n / top
        bars.append(f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}"'
                    f' height="{h:.1f}" fill="#3a78c2"><title>{escape(day)}: {n}</title></rect>')
    names = list(days)
    first, last = names[0], names[-1]
    return (f'<svg id="days" width="{width}" height="{height + 20}" role="img">'
            f"{''.join(bars)}"
            f'<text x="0" y="{height + 15}" font-size="11">{escape(first)}</text>'
            f'<text x="{width}" y="{height + 15}" font-size="11" text-anchor="end">'
            f"{escape(last)}</text></svg>")


def _examples(db: sqlite3.Connection, data_dir: Path, rep: Mapping[str, Any],
              per_cell: int) -> str:
    blocks = []
    for c in rep["cells"]:
        if not c["frames"] or per_cell <= 0:
            continue
        imgs = []
        for key in cell_examples(db, (c["camera"], c["daypart"], c["weather"]), c["frames"],
                                 per_cell):
            uri = thumbnail(data_dir / key)
            imgs.append(f'<img alt="{escape(key)}" title="{escape(key)}" src="{uri}">' if uri
                        else f"<span>{escape(key)}: unreadable</span>")
        blocks.append(f'<div class="cell"><span>{escape(c["camera"])} · {escape(c["daypart"])}'
                      f' · {escape(c["weather"])} ({c["frames"]})</span>{"".join(imgs)}</div>')
    return "".join(blocks)


def render(db: sqlite3.Connection, data_dir: Path, rep: Mapping[str, Any],
           per_cell: int = 2) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>lyoncam coverage: {rep['total']} frames</title><style>{STYLE}</style>"
        f"<script>{SCRIPT}</script></head><body>"
        f"<h1>lyoncam coverage</h1><p>{rep['total']} frames under {escape(str(data_dir))}; "
        f"{rep['empty']} empty cells, {rep['thin']} thin (under {rep['thin_below']} frames)."
        "</p><h2>Frames per camera, daypart and weather</h2>"
        f"{_heatmap(rep)}<h2>Frames per day</h2>{_days_chart(rep['days'])}"
        f"<h2>Examples per cell</h2>{_examples(db, data_dir, rep, per_cell)}"
        "</body></html>\n"
    )
