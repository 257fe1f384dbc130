"""Atomic writes: the old file or the whole new one, and no temp file left on failure."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from lyoncam_daemon.storage.atomic import write_atomic


def test_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new" * 100_000)
    assert target.read_bytes() == b"new" * 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.json"
    target.write_bytes(b"old")

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


_WRITE_ONE = (
    "import sys\n"
    "from datetime import UTC, datetime\n"
    "from pathlib import Path\n"
    "from lyoncam_daemon.storage import Frame\n"
    "from lyoncam_daemon.storage.filesystem import FilesystemStorage\n"
    "FilesystemStorage(Path(sys.argv[1])).write(\n"
    "    Frame('CAM', datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), b'\\xff\\xd8x', {}))\n"
)


def test_new_camera_year_and_month_folders_are_fsynced_into_their_parents(
    tmp_path: Path,
) -> None:
    """Seen in the system calls themselves (strace, the real thing): a new month's folder is
    an entry in the year's folder, lost in a power cut until that folder is fsynced."""
    import shutil
    import subprocess
    import sys

    strace = shutil.which("strace")
    assert strace is not None, "strace is needed (apt-get install strace)"
    data = tmp_path / "data"
    data.mkdir()
    trace = tmp_path / "trace"
    subprocess.run([strace, "-f", "-y", "-e", "trace=fsync", "-o", str(trace), sys.executable,
                    "-c", _WRITE_ONE, str(data)], check=True, timeout=60)
    synced = {line.split("<", 1)[1].split(">", 1)[0]
              for line in trace.read_text().splitlines() if "fsync(" in line and "<" in line}
    folders = [data, data / "CAM", data / "CAM/2027", data / "CAM/2027/01",
               data / "CAM/2027/01/01"]
    assert [str(f) for f in folders if str(f) not in synced] == []
