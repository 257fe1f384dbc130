"""`report --html`: one self-contained page (no network, no scripts from elsewhere).

Made to read at a glance in a 1280 px window for hundreds of cameras: a daypart x weather
matrix over all cameras, then one row per camera with the dayparts as columns and its
weathers as a small stacked bar in each (thin cells outlined, empty ones grey), frames per
day as an inline SVG bar chart, and a few thumbnails per daypart x weather as `data:` URIs,
so the file can be mailed or opened offline years later. Every number is in a tooltip and
in `report --json`.
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

#: One width for any number of cameras: the per-camera table has a fixed number of columns
#: (the dayparts), weather is shown inside each cell as a stacked bar, so nothing needs more
#: than a 1280 px window however many cameras or weather labels there are.
STYLE = """
*{box-sizing:border-box}
body{font:14px system-ui,sans-serif;margin:16px 24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:20px 0 6px}
table{border-collapse:collapse;table-layout:fixed;width:100%}
td,th{border:1px solid #ddd;padding:2px 4px;text-align:right;overflow:hidden;
white-space:nowrap;text-overflow:ellipsis}
th{background:#f4f4f4;font-weight:600}
#overview{max-width:1000px}
#overview td{height:30px}
#overview th.row,#cameras th.row{text-align:left}
#cameras{font-size:12px}#cameras td{height:20px;padding:1px 3px}
#cameras col.camera{width:150px}#cameras col.total{width:64px}
td.empty{background:#f3f3f3;color:#aaa;text-align:center}
td.thin{outline:2px solid #e08000;outline-offset:-2px}
.bar{display:flex;height:10px;border-radius:2px;overflow:hidden;background:#eee;margin-top:1px}
.bar span{display:block;height:100%;min-width:2px}
td .n{display:block;line-height:12px}
.legend span{display:inline-block;margin:2px 10px 2px 0;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px;
border-radius:2px}
.legend .thin{outline:2px solid #e08000;outline-offset:-2px;background:#fff}
svg{max-width:100%;height:auto}
.cell{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}
.cell img{display:block;width:160px;height:90px;object-fit:cover;margin:2px 0}
.cell span{font-size:12px;color:#555}
"""

#: Weather colours in the stacked bars (and the legend): warm for clear, greys for cloud,
#: blues for wet, violet for storms.
WEATHER_COLOURS = {
    "clear": "#f2c14e", "partly_cloudy": "#b9d3e6", "overcast": "#8a969e", "fog": "#c3b6dc",
    "drizzle": "#7fbfe6", "rain": "#2e78c2", "snow": "#d9ecf7", "storm": "#6c3483",
}
OTHER_COLOUR = "#bbbbbb"

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
        return "background:#f3f3f3"
    t = math.log1p(n) / math.log1p(top)
    light = round(92 - 55 * t)
    return f"background:hsl(212,70%,{light}%);color:{'#fff' if light < 60 else '#222'}"


def _axes(rep: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    overview: Sequence[Mapping[str, Any]] = rep["overview"]
    return (list(dict.fromkeys(c["daypart"] for c in overview)),
            list(dict.fromkeys(c["weather"] for c in overview)))


def _overview(rep: Mapping[str, Any]) -> str:
    """Daypart x weather over every camera: a handful of rows and columns, whatever the size
    of the fleet."""
    dayparts, weathers = _axes(rep)
    by = {(c["daypart"], c["weather"]): c for c in rep["overview"]}
    top = max((c["frames"] for c in rep["overview"]), default=0)
    head = "".join(f'<th title="{escape(w)}">{escape(w.replace("_", " "))}</th>'
                   for w in weathers)
    rows = []
    for d in dayparts:
        tds = []
        for w in weathers:
            c = by[(d, w)]
            n, status = c["frames"], c["status"]
            tip = (f"{d} · {w}: {n} frames from {c['cameras']} of {rep['cameras']} cameras"
                   + (" (thin)" if status == "thin" else ""))
            tds.append(f'<td class="{status}" data-frames="{n}" title="{escape(tip)}" '
                       f'style="{_colour(n, top)}">{n if n else "·"}</td>')
        rows.append(f'<tr><th class="row">{escape(d)}</th>{"".join(tds)}</tr>')
    return (f'<table id="overview"><tr><th class="row">daypart</th>{head}</tr>'
            f'{"".join(rows)}</table>')


def _legend(weathers: Sequence[str], thin_below: int) -> str:
    items = "".join(f'<span><i style="background:{WEATHER_COLOURS.get(w, OTHER_COLOUR)}">'
                    f'</i>{escape(w.replace("_", " "))}</span>' for w in weathers)
    return (f'<p class="legend">{items}<span><i class="thin"></i>thin: a camera x daypart '
            f"with under {thin_below} frames</span><span>· none</span></p>")


def _cameras(rep: Mapping[str, Any]) -> str:
    """One row per camera, one column per daypart: its frames and a bar of its weathers."""
    dayparts, weathers = _axes(rep)
    thin_below = rep["thin_below"]
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for c in rep["cells"]:
        counts.setdefault(c["camera"], {}).setdefault(c["daypart"], {})[c["weather"]] = \
            c["frames"]
    cols = ('<colgroup><col class="camera"><col class="total">'
            + "<col>" * len(dayparts) + "</colgroup>")
    head = ('<tr><th class="row">camera</th><th>frames</th>'
            + "".join(f"<th>{escape(d)}</th>" for d in dayparts) + "</tr>")
    rows = []
    for camera, by_daypart in counts.items():
        total = sum(sum(ws.values()) for ws in by_daypart.values())
        tds = []
        for d in dayparts:
            ws = by_daypart.get(d, {})
            n = sum(ws.values())
            if n == 0:
                tip = f"{camera} · {d}: no frames"
                tds.append(f'<td class="empty" data-frames="0" title="{escape(tip)}">·</td>')
                continue
            status = "thin" if n < thin_below else "ok"
            parts = [f"{w} {ws[w]}{' thin' if ws[w] < thin_below else ''}"
                     for w in weathers if ws.get(w)]
            tip = f"{camera} · {d}: {n} frames ({', '.join(parts)})" + (
                " (thin)" if status == "thin" else "")
            spans = "".join(
                f'<span style="width:{100 * ws[w] / n:.2f}%;background:'
                f'{WEATHER_COLOURS.get(w, OTHER_COLOUR)}"></span>'
                for w in weathers if ws.get(w))
            tds.append(f'<td class="{status}" data-frames="{n}" title="{escape(tip)}">'
                       f'<span class="n">{n}</span><div class="bar">{spans}</div></td>')
        rows.append(f'<tr><th class="row" title="{escape(camera)}">{escape(camera)}</th>'
                    f'<td>{total}</td>{"".join(tds)}</tr>')
    return f'<table id="cameras">{cols}{head}{"".join(rows)}</table>'


def _days_chart(days: Mapping[str, int]) -> str:
    if not days:
        return "<p>No frames yet.</p>"
    width, height, top = 1000, 160, max(days.values())
    bar = width / len(days)
    bars = []
    for i, (day, n) in enumerate(days.items()):
        h = height * n / top
        bars.append(f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}"'
                    f' height="{h:.1f}" fill="#3a78c2"><title>{escape(day)}: {n}</title></rect>')
    names = list(days)
    first, last = names[0], names[-1]
    return (f'<svg id="days" viewBox="0 0 {width} {height + 20}" width="{width}" '
            f'height="{height + 20}" role="img">{"".join(bars)}'
            f'<text x="0" y="{height + 15}" font-size="11">{escape(first)}</text>'
            f'<text x="{width}" y="{height + 15}" font-size="11" text-anchor="end">'
            f"{escape(last)}</text></svg>")


def _examples(db: sqlite3.Connection, data_dir: Path, rep: Mapping[str, Any],
              per_cell: int) -> str:
    """Thumbnails per daypart x weather over all cameras (per camera would be thousands of
    images in one file for a large fleet)."""
    blocks = []
    for c in rep["overview"]:
        if not c["frames"] or per_cell <= 0:
            continue
        imgs = []
        for key in cell_examples(db, (None, c["daypart"], c["weather"]), c["frames"],
                                 per_cell):
            if not (data_dir / key).is_file():
                continue  # deleted since it was indexed: never shown as if it were there
            uri = thumbnail(data_dir / key)
            imgs.append(f'<img alt="{escape(key)}" title="{escape(key)}" src="{uri}">' if uri
                        else f"<span>{escape(key)}: unreadable</span>")
        blocks.append(f'<div class="cell"><span>{escape(c["daypart"])} · '
                      f'{escape(c["weather"])} ({c["frames"]})</span>{"".join(imgs)}</div>')
    return "".join(blocks)


def render(db: sqlite3.Connection, data_dir: Path, rep: Mapping[str, Any],
           per_cell: int = 2) -> str:
    _, weathers = _axes(rep)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>lyoncam coverage: {rep['total']} frames</title><style>{STYLE}</style>"
        f"<script>{SCRIPT}</script></head><body>"
        f"<h1>lyoncam coverage</h1><p>{rep['total']} frames from {rep['cameras']} cameras "
        f"under {escape(str(data_dir))}; camera x daypart x weather: {rep['empty']} empty "
        f"cells, {rep['thin']} thin (under {rep['thin_below']} frames). Every number is in "
        "the tooltips and in <code>report --json</code>.</p>"
        f"<h2>All cameras: daypart x weather</h2>{_overview(rep)}"
        f"<h2>Per camera: dayparts, and their weather</h2>{_legend(weathers, rep['thin_below'])}"
        f"{_cameras(rep)}<h2>Frames per day</h2>{_days_chart(rep['days'])}"
        f"<h2>Examples per daypart and weather</h2>{_examples(db, data_dir, rep, per_cell)}"
        "</body></html>\n"
    )
