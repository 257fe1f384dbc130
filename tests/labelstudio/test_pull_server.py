"""`pull` end to end against a real Label Studio server (see conftest.py).

One project with the CriTer label config is filled once per module: frames uploaded, annotations
posted (boxes, a re-annotated task, a cancelled annotation, a negative, an unlabelled task, a
rotated box, a label missing from the config, a malformed region). Every box is checked
numerically and every image byte for byte; both kinds of key are used.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from PIL import Image

from lyoncam_daemon.labelstudio.auth import Credentials, Secret
from lyoncam_daemon.labelstudio.client import LabelStudioClient
from lyoncam_daemon.labelstudio.pull import PullOptions, Summary, run_pull
from lyoncam_daemon.labelstudio.split import side_of

from .conftest import REPO, START_TIMEOUT_S, LabelStudio
from .helpers import Shown

# The first test here also waits for the session's Label Studio to start: up to
# conftest.START_TIMEOUT_S on a loaded machine, more than the suite's 120 s per test.
pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(START_TIMEOUT_S + 120)]

CLASSES = ["Car", "Truck", "Bus", "Motorbike", "Scooter", "Bicycle", "Pedestrian"]
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)
FIXTURE = REPO / "tests" / "fixtures" / "CWL9018_night.jpg"


def region(x: float, y: float, w: float, h: float, label: str, rotation: float = 0,
           size: tuple[int, int] = (1920, 1080)) -> dict[str, Any]:
    return {
        "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": size[0], "original_height": size[1], "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                  "rectanglelabels": [label]},
    }


def expected_line(r: dict[str, Any], class_id: int) -> tuple[int, float, float, float, float]:
    v = r["value"]
    x, y, w, h = v["x"], v["y"], v["width"], v["height"]
    return class_id, (x + w / 2) / 100, (y + h / 2) / 100, w / 100, h / 100


@dataclass
class Frame:
    name: str
    data: bytes
    annotations: list[dict[str, Any]] = field(default_factory=list)
    expected: list[tuple[int, float, float, float, float]] | None = None
    """Expected YOLO rows; None: must not be in train/val at all."""
    task_id: int = 0

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


@dataclass
class Project:
    server: LabelStudio
    id: int
    frames: list[Frame]

    def by_stem(self, stem: str) -> Frame:
        return next(f for f in self.frames if f.stem == stem)


def synthetic_jpeg(seed: int) -> bytes:
    im = Image.new("RGB", (320, 180), (seed * 37 % 256, seed * 71 % 256, seed * 13 % 256))
    for i in range(0, 320, 16):
        im.putpixel((i, seed % 180), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def frame_names(count: int) -> list[str]:
    """Frame names covering both sides of the split (val first), deterministic."""
    val: list[str] = []
    train: list[str] = []
    for n in range(200):
        stem = f"CWL{9000 + n % 7}_202503{1 + n % 28:02d}T{n % 24:02d}1500Z"
        (val if side_of(stem) == "val" else train).append(stem + ".jpg")
    return val[:3] + train[: count - 3]


@pytest.fixture(scope="module")
def project(label_studio: LabelStudio) -> Iterator[Project]:
    names = frame_names(10)
    real = FIXTURE.read_bytes()
    frames = [Frame(name, real if i == 0 else synthetic_jpeg(i)) for i, name in enumerate(names)]
    f_real, f_update, f_negative, f_unlabelled, f_rotated, f_extra, f_bad, *f_plain = frames
    ids = {c: i for i, c in enumerate(CLASSES)}

    boxes = [region(12.3456789, 40.1234567, 7.7654321, 9.1111111, "Car"),
             region(55.5, 60.25, 20.125, 15.0625, "Truck"),
             region(0.0, 0.0, 3.3333333, 6.6666667, "Pedestrian"),
             region(80.0, 70.0, 19.999999, 29.999999, "Bus")]
    f_real.annotations = [{"result": boxes}]
    f_real.expected = [expected_line(r, ids[r["value"]["rectanglelabels"][0]]) for r in boxes]

    newer = [region(10, 10, 5, 5, "Motorbike"), region(30, 30, 4, 8, "Scooter")]
    f_update.annotations = [
        {"result": [region(1, 1, 2, 2, "Car")]},
        {"result": newer},
        {"result": [region(50, 50, 10, 10, "Bicycle")], "was_cancelled": True},
    ]
    f_update.expected = [expected_line(newer[0], 3), expected_line(newer[1], 4)]

    f_negative.annotations = [{"result": []}]
    f_negative.expected = []
    f_unlabelled.expected = None

    # 90 degrees about the top-left corner, 320x180 px: 32x18 px at (160, 90) spans
    # x 142..160, y 90..122 px.
    f_rotated.annotations = [{"result": [region(50, 50, 10, 10, "Car", 90, (320, 180))]}]
    f_rotated.expected = [(0, 151 / 320, 106 / 180, 18 / 320, 32 / 180)]

    extra = region(20, 20, 10, 10, "Tram")
    f_extra.annotations = [{"result": [extra, region(40, 40, 5, 5, "Bicycle")]}]
    f_extra.expected = [expected_line(extra, 7), (5, 0.425, 0.425, 0.05, 0.05)]

    bad = region(20, 20, 10, 10, "Car")
    bad["value"]["width"] = "wide"
    f_bad.annotations = [{"result": [bad, region(1, 1, 1, 1, "Car")]}]
    f_bad.expected = None  # incomplete annotation: left out, reported

    for k, f in enumerate(f_plain):
        r = [region(5 + k, 6 + k, 10.5, 12.25, CLASSES[k % 7])]
        f.annotations = [{"result": r}]
        f.expected = [expected_line(r[0], k % 7)]

    server = label_studio
    created = server.api("POST", "/api/projects", {"title": "CriTer pull test",
                                                   "label_config": CONFIG})
    pid = int(created["id"])
    files = {f"file{i}": (f.name, f.data) for i, f in enumerate(frames)}
    server.api("POST", f"/api/projects/{pid}/import?return_task_ids=true", files=files)
    tasks = server.api("GET", f"/api/tasks/?project={pid}&page_size=100")["tasks"]
    by_name = {t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]: t["id"] for t in tasks}
    for f in frames:
        f.task_id = by_name[f.name]
        for ann in f.annotations:
            server.api("POST", f"/api/tasks/{f.task_id}/annotations/", ann)
    yield Project(server, pid, frames)


def pull_cli(server: LabelStudio, pid: int, out: Path, *extra: str, key: str | None = None,
             token_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LABEL_STUDIO_API_KEY"}
    if key is not None:
        env["LABEL_STUDIO_API_KEY"] = key
    cmd = [sys.executable, "-m", "lyoncam_daemon", "pull", "--url", server.url,
           "--project", str(pid), "--out", str(out), "--rate", "0", "-v", *extra]
    if token_file is not None:
        cmd += ["--token-file", str(token_file)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def log_records(stderr: str) -> list[dict[str, Any]]:
    """The log lines of a pull whose stderr is not a terminal: every one a JSON object."""
    lines = [line for line in stderr.splitlines() if not line.startswith("error:")]
    records = [json.loads(line) for line in lines]
    assert all({"event", "level", "timestamp"} <= set(r) for r in records)
    return records


def read_rows(path: Path) -> list[tuple[int, float, float, float, float]]:
    rows = []
    for line in path.read_text().splitlines():
        c, *v = line.split()
        rows.append((int(c), *(float(x) for x in v)))
    return rows  # type: ignore[return-value]


def check_dataset(project: Project, out: Path, classes: list[str]) -> None:
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert data["names"] == dict(enumerate(classes))
    assert (out / "classes.txt").read_text().splitlines() == classes

    seen = set()
    for side in ("train", "val"):
        for image in (out / "images" / side).iterdir():
            frame = project.by_stem(image.stem)
            assert frame.expected is not None, f"{image.name} should not be in the dataset"
            assert side == side_of(frame.stem)
            assert image.read_bytes() == frame.data, f"{image.name} differs from the upload"
            rows = read_rows(out / "labels" / side / f"{image.stem}.txt")
            assert len(rows) == len(frame.expected), image.name
            for got, want in zip(rows, frame.expected, strict=True):
                assert got[0] == want[0], image.name
                assert got[1:] == pytest.approx(want[1:], abs=1e-6), image.name
            seen.add(frame.stem)
        labels = {p.stem for p in (out / "labels" / side).iterdir()}
        assert labels == {p.stem for p in (out / "images" / side).iterdir()}
    assert seen == {f.stem for f in project.frames if f.expected is not None}
    assert any((out / "images" / "val").iterdir()) and any((out / "images" / "train").iterdir())


def assert_quiet_about(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text
        assert secret[:16] not in text


def test_pull_with_legacy_token_then_resume(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    server = project.server
    first = pull_cli(server, project.id, out, key=server.token)
    assert first.returncode == 0, first.stderr[-3000:]
    check_dataset(project, out, [*CLASSES, "Tram"])
    wanted = sum(f.expected is not None for f in project.frames)
    assert f"fetched {wanted}, skipped (already present) 0, failed 0" in first.stdout
    assert "boxes per class: Car 3, Truck 2, Bus 2, Motorbike 1, Scooter 1, Bicycle 1, " \
        "Pedestrian 1, Tram 1 (total 12)" in first.stdout
    assert "1 unlabelled skipped" in first.stdout and "1 left out for problems" in first.stdout
    records = log_records(first.stderr)
    assert {"event": "extra_class", "label": "Tram", "level": "warning"}.items() <= \
        next(r for r in records if r["event"] == "extra_class").items()
    assert "rotated by 90 degrees" in first.stderr
    problems = [r for r in records if r["event"] == "task_problem"]
    assert any("malformed rectangle" in r["problem"] and r["task"] == project.frames[6].task_id
               for r in problems), problems
    assert_quiet_about(server.token, first.stdout, first.stderr)

    second = pull_cli(server, project.id, out, key=server.token)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"fetched 0, skipped (already present) {wanted}, failed 0" in second.stdout
    assert "changes: 0 images added, 0 moved between train/val, 0 labels new, " \
        "0 labels changed, 0 removed" in second.stdout
    check_dataset(project, out, [*CLASSES, "Tram"])


def test_pull_reports_changes(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    server = project.server
    assert pull_cli(server, project.id, out, key=server.token).returncode == 0
    real, plain = project.frames[0], project.frames[7]
    side = side_of(real.stem)
    (out / "images" / side / f"{real.stem}.jpg").unlink()  # lost
    plain_path = out / "images" / side_of(plain.stem) / f"{plain.stem}.jpg"
    plain_path.write_bytes(plain.data[:100])  # truncated on disk
    label = out / "labels" / side_of(plain.stem) / f"{plain.stem}.txt"
    label.write_text("0 0.5 0.5 0.1 0.1\n")  # edited by hand: restored from the server
    again = pull_cli(server, project.id, out, "--include-unlabelled", key=server.token)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "fetched 3," in again.stdout  # the lost, the truncated and the unlabelled one
    assert "1 labels changed" in again.stdout
    assert "1 unlabelled included" in again.stdout
    unlabelled = project.frames[3]
    assert (out / "images" / "unlabelled" / f"{unlabelled.stem}.jpg").read_bytes() == \
        unlabelled.data
    check_dataset(project, out, [*CLASSES, "Tram"])
    # dropping --include-unlabelled removes what only it had brought
    last = pull_cli(server, project.id, out, key=server.token)
    assert "1 removed" in last.stdout
    assert not (out / "images" / "unlabelled" / f"{unlabelled.stem}.jpg").exists()


def test_pull_with_personal_access_token(project: Project, personal_access_token: str,
                                         tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(personal_access_token + "\n")
    out = tmp_path / "ds"
    result = pull_cli(project.server, project.id, out, token_file=key_file)
    assert result.returncode == 0, result.stderr[-3000:]
    check_dataset(project, out, [*CLASSES, "Tram"])
    assert_quiet_about(personal_access_token, result.stdout, result.stderr)
    assert "access_token_refreshed" in result.stderr


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_pull_on_terminal(server: LabelStudio, pid: int, out: Path, key: str,
                         *extra: str) -> tuple[int, str, str]:
    """A pull whose stderr is a terminal (a pty, 160 columns): exit code, stdout, stderr text
    with colours removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("LABEL_STUDIO_API_KEY", "NO_COLOR")}
    env["LABEL_STUDIO_API_KEY"] = key
    cmd = [sys.executable, "-m", "lyoncam_daemon", "pull", "--url", server.url,
           "--project", str(pid), "--out", str(out), "--rate", "0", "-v", *extra]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env, cwd=REPO) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        code = proc.wait(timeout=60)
    return code, stdout, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_terminal_gets_the_bar_and_console_log_lines(project: Project, tmp_path: Path) -> None:
    server = project.server
    code, stdout, stderr = run_pull_on_terminal(server, project.id, tmp_path / "ds", server.token)
    assert code == 0, stderr[-3000:]
    assert "fetched 8," in stdout
    lines = [part for line in stderr.splitlines() for part in line.split("\r")]
    assert any(re.search(r"100%.*\b8/8 .*img", part) for part in lines), stderr[-3000:]
    assert re.search(rf"\[info\s*\] tasks_listed\s+project={project.id} tasks=10", stderr)
    assert re.search(r"\[warning\s*\] extra_class\s+.*label=Tram", stderr)
    assert not any(part.lstrip().startswith("{") for part in lines)  # no JSON on a terminal
    assert_quiet_about(server.token, stdout, stderr)
    json_lines = run_pull_on_terminal(server, project.id, tmp_path / "ds", server.token,
                                      "--log-format", "json")[2]
    records = [json.loads(p) for p in json_lines.replace("\r", "\n").splitlines()
               if p.startswith("{")]
    assert {"tasks_listed", "progress"} & {r["event"] for r in records} == {"tasks_listed"}


def test_classes_override(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    order = ["Tram", *reversed(CLASSES)]
    result = pull_cli(project.server, project.id, out, "--classes", ",".join(order),
                      key=project.server.token)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "classes.txt").read_text().splitlines() == order
    real = project.frames[0]
    rows = read_rows(out / "labels" / side_of(real.stem) / f"{real.stem}.txt")
    assert [order[r[0]] for r in rows] == ["Car", "Truck", "Pedestrian", "Bus"]


def test_wrong_key_explains_and_does_not_echo(project: Project, tmp_path: Path) -> None:
    wrong = "0badc0de" * 5
    result = pull_cli(project.server, project.id, tmp_path / "ds", key=wrong)
    assert result.returncode == 1
    assert "401" in result.stderr and "personal access token" in result.stderr
    assert "legacy" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 300, errors
    assert "Label Studio 1.20 and later" in errors[0]
    assert_quiet_about(wrong, result.stdout, result.stderr)
    missing = pull_cli(project.server, project.id, tmp_path / "ds")
    assert missing.returncode == 2 and "LABEL_STUDIO_API_KEY" in missing.stderr


def test_missing_project_names_the_server(project: Project, tmp_path: Path) -> None:
    missing = project.id + 100_000
    result = pull_cli(project.server, missing, tmp_path / "ds", key=project.server.token)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == \
        f"error: project {missing} not found on {project.server.url}"
    assert_quiet_about(project.server.token, result.stdout, result.stderr)


def test_labels_dir_from_a_yolo_export(project: Project, tmp_path: Path) -> None:
    server = project.server
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/api/projects/{project.id}/export?exportType=YOLO",
        headers={"Authorization": f"Token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        archive = zipfile.ZipFile(io.BytesIO(resp.read()))
    export = tmp_path / "export"
    archive.extractall(export)
    assert not [n for n in archive.namelist() if n.startswith("images/") and n != "images/"]
    out = tmp_path / "ds"
    result = pull_cli(server, project.id, out, "--labels-dir", str(export / "labels"),
                      key=server.token)
    export_classes = (export / "classes.txt").read_text().splitlines()
    assert (out / "classes.txt").read_text().splitlines() == export_classes
    exported = {p.stem.split("-", 1)[1]: p for p in (export / "labels").glob("*.txt")}
    got = {p.stem: p for side in ("train", "val") for p in (out / "labels" / side).iterdir()}
    assert set(got) == set(exported)
    for stem, path in got.items():
        mine, theirs = read_rows(path), read_rows(exported[stem])
        assert [r[0] for r in mine] == [r[0] for r in theirs]
        assert [v for r in mine for v in r[1:]] == pytest.approx(
            [v for r in theirs for v in r[1:]], abs=1e-6)
        frame = project.by_stem(stem)
        assert (out / "images" / path.parent.name / f"{stem}.jpg").read_bytes() == frame.data
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 not in the labels dir" in result.stdout  # the unlabelled task
    again = pull_cli(server, project.id, out, "--labels-dir", str(export / "labels"),
                     key=server.token)
    assert "fetched 0," in again.stdout


def test_manifest_records_sources(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert pull_cli(project.server, project.id, out, key=project.server.token).returncode == 0
    manifest = json.loads((out / ".lyoncam-pull.json").read_text())
    assert manifest["project"] == project.id
    for stem, entry in manifest["items"].items():
        assert entry["task"] == project.by_stem(stem).task_id
        assert entry["source"].startswith(f"/data/upload/{project.id}/")
    other = pull_cli(project.server, project.id + 1000, out, key=project.server.token)
    assert other.returncode != 0 and "choose another --out" in other.stderr


def test_key_appears_nowhere_in_process(project: Project, tmp_path: Path, shown: Shown,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A full pull in this process, debug lines on: the key is in no stdout, stderr (where the
    CLI's log lines go) or log event; then the library alone, its events captured."""
    from lyoncam_daemon.cli import main

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", project.server.token)
    args = ["pull", "--url", project.server.url, "--project", str(project.id),
            "--out", str(tmp_path / "ds"), "--rate", "0", "-v", "--progress", "bar"]
    assert main(args) == 0
    wrong = "recognisable" + "f00d" * 8
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", wrong)
    assert main(args) == 1
    out, err = shown.read()
    assert "fetched 8," in out and "401" in err
    structlog.configure(processors=[shown.capture],
                        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    credentials = Credentials(Secret(project.server.token))
    summary = asyncio.run(library_pull(project, credentials, tmp_path / "ds2"))
    assert summary.fetched == 8 and {"tasks_listed", "image_fetched"} <= {
        e["event"] for e in shown.events}
    shown.assert_never_shown(project.server.token, wrong)


async def library_pull(project: Project, credentials: Credentials, out: Path) -> Summary:
    async with LabelStudioClient(project.server.url, credentials, rate=None) as client:
        return await run_pull(client, PullOptions(project=project.id, out=out))
