"""A camera URL's credentials (`user:password@`, `?token=`) go to the camera and nowhere else:
not into any file under data_dir, any object of the bucket (real SeaweedFS), any log line of
`run`, nor any answer of its endpoint (/, /healthz, /metrics, thumbnails)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from lyoncam_daemon.config import public_url
from lyoncam_daemon.devtools.simulator import CriterSimulator
from tests._procs import DaemonProcess
from tests._seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3

USER, PASSWORD, TOKEN = "camuser42", "pa55w0rd-s3cr3t", "t0ken-s3cr3t-9876"
SECRETS = (USER, PASSWORD, TOKEN)


def secret_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{USER}:{PASSWORD}@{rest}?token={TOKEN}&size=full"


def test_public_url_keeps_the_place_and_drops_the_credentials() -> None:
    assert public_url(f"http://{USER}:{PASSWORD}@h:8080/a/B.JPG?token={TOKEN}&size=full#x") \
        == "http://h:8080/a/B.JPG?token=&size="
    assert public_url("https://h/B.JPG") == "https://h/B.JPG"


def leaks(blob: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in blob]


def get(url: str) -> bytes:
    """The body, whatever the status (an unhealthy /healthz answers 503 with its reasons)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body: bytes = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    return body


@pytest.mark.parametrize("kind", ["filesystem", "s3"])
async def test_camera_credentials_reach_no_file_object_log_or_endpoint(
    kind: str, s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    storage = ""
    if kind == "s3":
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        storage = (f"storage:\n  kind: s3\n  endpoint: {s3.endpoint}\n  bucket: {s3.bucket}\n"
                   f"  prefix: {tmp_path.name}\n  timeout: 5\n")
    async with CriterSimulator(["SEC1", "SEC2"], period=0.3) as sim:
        config = tmp_path / "cameras.yaml"
        # SEC2's port is closed: its failures are logged, with its URL's credentials in none.
        config.write_text(
            f"data_dir: {data}\nweather:\n  enabled: false\nlog:\n  summary_interval: 0.5\n"
            f"status:\n  port: 0\n{storage}retry:\n  backoff_initial: 0.2\n  backoff_max: 0.4\n"
            "  down_after: 1\n  down_probe_interval: 0.4\n"
            "defaults:\n  interval: 0.2\n  timeout: 2\ncameras:\n"
            f"  - id: SEC1\n    url: '{secret_url(sim.url('SEC1'))}'\n"
            f"  - id: SEC2\n    url: '{secret_url('http://127.0.0.1:9/SEC2.JPG')}'\n")
        daemon = DaemonProcess(config, tmp_path / "run.log")
        await daemon.start()
        try:
            await daemon.wait_started()
            [started] = [e for e in daemon.events() if e.get("event") == "started"]
            base = started["status"]
            await daemon.until(lambda: len(sim.stats["SEC1"].served_sha256) >= 3 and any(
                e.get("event") == "camera state" and e.get("camera") == "SEC2"
                for e in daemon.events()), "frames of SEC1 and a failure of SEC2")
            paths = ["", "healthz", "metrics"]
            if kind == "filesystem":  # thumbnails are read from the tree
                paths.append("cameras/SEC1/latest.jpg")
            answers = {path: await asyncio.to_thread(get, base + path) for path in paths}
            assert await daemon.stop() == 0
        finally:
            await daemon.ensure_dead()
    assert any(b"SEC1" in body for body in answers.values())  # the endpoint did answer
    found = {f"GET /{path}": leaks(body) for path, body in answers.items()}
    found["log"] = leaks((tmp_path / "run.log").read_bytes())
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" and "SEC1" in p.name for p in files) or kind == "s3"
    found |= {str(p.relative_to(data)): leaks(p.read_bytes()) for p in files}
    if kind == "s3":
        store = S3Store(s3.bucket, endpoint=s3.endpoint, access_key_id=ACCESS_KEY,
                        secret_access_key=SECRET_KEY, region="us-east-1",
                        virtual_hosted_style_request=False, client_options={"allow_http": True})
        keys = [meta["path"] async for batch in obstore.list(store, tmp_path.name + "/")
                for meta in batch]
        assert any(k.endswith(".json") for k in keys)
        for key in keys:
            got = await obstore.get_async(store, key)
            found[f"s3:{key}"] = leaks(bytes(await got.bytes_async()))
    assert {where: what for where, what in found.items() if what} == {}
