"""`report` and `sample`: counts equal the tree's, the page renders, the sample is balanced."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.curation.dataset import quotas, report, sample, sidecar_fingerprints, spread
from lyoncam_daemon.curation.index import connect, index_path, refresh
from tests._curation import T0, Spec, make_tree

#: Two cameras, several cells, one camera without location (daypart unknown), weather gaps.
TREE = (
    [Spec("A", m, "night", "clear") for m in range(0, 30)]
    + [Spec("A", 600 + m, "day", "rain") for m in range(0, 5)]
    + [Spec("A", 1440 + 600 + m, "day", None) for m in range(0, 3)]
    + [Spec("B", 2 * 1440 + m, None, "fog") for m in range(0, 4)]
)


def tree_counts(data_dir: Path) -> Counter[tuple[str, str, str]]:
    """The truth, from the sidecars themselves."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for sidecar in data_dir.rglob("*_*.json"):
        meta = json.loads(sidecar.read_text())
        weather = meta.get("weather")
        counts[(meta["camera_id"], meta.get("daypart") or "unknown",
                (weather or {}).get("label") or "unknown")] += 1
    return counts


def test_report_json_counts_equal_the_tree(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path, TREE)
    assert main(["report", "--data-dir", str(tmp_path), "--json", "--thin", "10"]) == 0
    captured = capsys.readouterr()
    assert "building it from the sidecars" in captured.err  # no index yet: built first
    rep = json.loads(captured.out)
    assert rep["total"] == len(TREE) == sum(tree_counts(tmp_path).values())
    got = {(c["camera"], c["daypart"], c["weather"]): c["frames"] for c in rep["cells"]}
    assert {k: v for k, v in got.items() if v} == dict(tree_counts(tmp_path))
    # Every camera x daypart x weather is there, empty ones included.
    assert len(rep["cells"]) == 2 * 5 * 9  # 4 dayparts + unknown, 8 labels + unknown
    status = {(c["camera"], c["daypart"], c["weather"]): c["status"] for c in rep["cells"]}
    assert status[("A", "night", "clear")] == "ok"
    assert status[("A", "day", "rain")] == "thin"
    assert status[("B", "dawn", "snow")] == "empty"
    assert rep["days"] == {"2026-11-20": 35, "2026-11-21": 3, "2026-11-22": 4}


def test_report_reads_the_index_the_daemon_keeps(tmp_path: Path) -> None:
    stored = make_tree(tmp_path, TREE)
    refresh(tmp_path)
    (tmp_path / stored[0].key).unlink()  # not seen until `index` runs
    with connect(index_path(tmp_path)) as db:
        assert report(db)["total"] == len(TREE)
    refresh(tmp_path)
    with connect(index_path(tmp_path)) as db:
        assert report(db)["total"] == len(TREE) - 1


def test_report_html_is_self_contained_and_renders_in_chromium(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, TREE)
    page = tmp_path / "report.html"
    assert main(["report", "--data-dir", str(data), "--html", str(page)]) == 0
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # nothing from elsewhere
    thumbs = html.count('src="data:image/jpeg;base64,')
    assert thumbs == 2 + 2 + 2 + 2  # two per non-empty daypart x weather, 4 of them
    assert 'id="overview"' in html and 'id="cameras"' in html and 'id="days"' in html
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is missing: scripts/test.sh installs it (apt-get install chromium)")
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=90, check=True).stdout
    # The page's own script counted the thumbnails Chromium decoded.
    assert f'data-thumbs-loaded="{thumbs}"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=90, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_table_and_bad_data_dir(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path, TREE)
    assert main(["report", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(TREE)} frames;")
    assert re.search(r"A\s+night\s+clear\s+30\n", out)
    assert main(["report", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sizes", "n", "expected"),
    [([10, 10, 10], 9, [3, 3, 3]), ([1, 50, 50], 9, [1, 4, 4]), ([2, 2], 10, [2, 2]),
     ([5, 100, 3], 10, [4, 3, 3]), ([], 5, [])],
)
def test_quotas_share_evenly_and_small_cells_give_all(sizes: list[int], n: int,
                                                       expected: list[int]) -> None:
    got = quotas(sizes, n)
    assert got == expected
    assert sum(got) == min(n, sum(sizes))


def test_spread_is_even() -> None:
    assert spread(100, 4) == [12, 37, 62, 87]
    assert spread(3, 5) == [0, 1, 2]


def test_sample_is_balanced_spread_and_skips_near_duplicates_and_pushed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    specs = (
        [Spec("A", m, "night", "clear") for m in range(100)]  # big cell, all distinct
        + [Spec("A", 600 + m, "day", "rain", scene=7) for m in range(10)]  # one scene, 10 copies
        + [Spec("B", m, "dusk", "fog") for m in range(3)]  # small cell
    )
    stored = make_tree(tmp_path, specs)
    refresh(tmp_path)
    with connect(index_path(tmp_path)) as db:
        db.execute("INSERT INTO pushed VALUES (?, 'http://ls', 1, 5, 0)", (stored[50].key,))
        picked = sample(db, 9, sidecar_fingerprints(tmp_path))
    cells = Counter((c.camera, c.daypart, c.weather) for c in picked)
    # The copies count once; the small cell gives all three; the rest goes to the big cell.
    assert cells == {("A", "day", "rain"): 1, ("B", "dusk", "fog"): 3,
                     ("A", "night", "clear"): 5}
    night = sorted(round((datetime.fromisoformat(c.captured_at) - T0).total_seconds() / 60)
                   for c in picked if c.daypart == "night")
    # Spread over the 100 minutes, not bunched (the top-up after the copies included).
    assert night[0] < 20 and night[-1] > 80
    assert min(b - a for a, b in pairwise(night)) >= 8
    assert stored[50].key not in {c.key for c in picked}

    out = tmp_path / "sample.json"
    assert main(["sample", "--data-dir", str(tmp_path), "--n", "200", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["frames"]) == 100 - 1 + 1 + 3
    assert "only 103 frames could be picked" in capsys.readouterr().err
    assert main(["sample", "--data-dir", str(tmp_path), "--n", "0"]) == 2


#: Run in the page after load by the test (not part of the page): how wide the document is,
#: and whether every cell holding frames lies inside the window, with a size.
MEASURE = """<script>addEventListener('load',()=>{const b=document.body.dataset,
w=document.documentElement.clientWidth;const held=[...document.querySelectorAll(
'#overview td,#cameras td')].filter(td=>+td.dataset.frames>0);b.scrollWidth=
document.documentElement.scrollWidth;b.clientWidth=w;b.held=held.length;b.shown=held.filter(
td=>{const r=td.getBoundingClientRect();return r.width>8&&r.height>8&&r.left>=0&&r.right<=w}
).length;b.bars=document.querySelectorAll('#cameras .bar span').length;});</script>"""


def test_report_html_fits_1280_px_for_300_cameras(tmp_path: Path) -> None:
    """300 cameras, every weather and daypart: no sideways scrolling at 1280 x 900, and every
    cell holding frames is on screen."""
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    weathers = ["clear", "partly_cloudy", "overcast", "fog", "drizzle", "rain", "snow",
                "storm", None]
    for c in range(300):
        camera = f"CWL{c:04d}_a_rather_long_camera_identifier"
        for i in range(3 + c % 40):  # skewed: some cameras with many frames, most thin
            daypart = ("night", "dawn", "day", "dusk", None)[(i + c) % 5 if c % 7 else 2]
            weather = weathers[(i * 3 + c) % 9]
            when = f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00.000Z"
            rows.append((f"{camera}/2026/11/01/{camera}_{c}_{i}.jpg", camera, when, when[:10],
                         daypart, weather, None, None, None, None, 1920, 1080, 1, 0.0))
    with connect(index_path(data)) as db:
        db.executemany(f"INSERT INTO frames VALUES ({', '.join('?' * 14)})", rows)
    page = tmp_path / "report.html"
    assert main(["report", "--data-dir", str(data), "--html", str(page),
                 "--thumbnails", "0"]) == 0
    html = page.read_text()
    assert html.count('<tr><th class="row" title="CWL') == 300
    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</body>", MEASURE + "</body>"))
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: scripts/test.sh installs it (apt-get install chromium)")
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
         "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()],
        capture_output=True, text=True, timeout=90, check=True).stdout
    got = {k: int(v) for k, v in re.findall(r'data-(scroll-width|client-width|held|shown|bars)'
                                            r'="(\d+)"', dom)}
    assert got["client-width"] > 1200  # the window is 1280 px (less a scroll bar)
    assert got["scroll-width"] <= got["client-width"]  # no horizontal overflow
    assert got["held"] > 300 and got["shown"] == got["held"]
    assert got["bars"] > 300  # weather bars drawn


def test_sample_and_the_report_page_never_offer_a_frame_gone_from_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    stored = make_tree(tmp_path, [Spec("A", m, "night", "clear") for m in range(10)])
    refresh(tmp_path)
    gone = {f.key for f in stored[::2]}
    for key in gone:  # deleted by hand, behind the index's back
        (tmp_path / key).unlink()
        (tmp_path / key).with_suffix(".json").unlink()
    out = tmp_path / "sample.json"
    assert main(["sample", "--data-dir", str(tmp_path), "--n", "10", "--out", str(out)]) == 0
    picked = {f["key"] for f in json.loads(out.read_text())["frames"]}
    assert picked == {f.key for f in stored} - gone
    assert "warning: 5 indexed frames are gone from disk and were not picked" in \
        capsys.readouterr().err
    page = tmp_path / "report.html"
    assert main(["report", "--data-dir", str(tmp_path), "--html", str(page),
                 "--thumbnails", "10"]) == 0
    html = page.read_text()
    assert not [k for k in gone if k in html] and all(k in html for k in picked)
