"""Frames in a real S3 server (SeaweedFS on loopback): bytes as served, create-only keys,
restart recovery from the bucket, and an outage that loses nothing."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import obstore
import pytest
import structlog

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.config import StorageSettings
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from lyoncam_daemon.storage import Frame, StoreError, encode_sidecar
from lyoncam_daemon.storage.s3 import CredentialsError, S3Storage, load_credentials
from tests._scene import poll, serving
from tests._seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3
from tests.conftest import make_config, run_until, until

T0 = datetime(2026, 11, 26, 0, 15, 3, tzinfo=UTC)
#: How long the S3 server stays dead in the outage test (the issue asks for 30 s).
OUTAGE_S = 30.0


def settings(server: SeaweedS3, prefix: str, **extra: object) -> StorageSettings:
    return StorageSettings.model_validate(
        {"kind": "s3", "endpoint": server.endpoint, "bucket": server.bucket, "prefix": prefix,
         "timeout": 5, **extra})


@pytest.fixture
async def store(s3: SeaweedS3, request: pytest.FixtureRequest) -> AsyncIterator[S3Storage]:
    yield S3Storage(settings(s3, f"t-{request.node.name[:40]}"), (ACCESS_KEY, SECRET_KEY))


async def objects(store: S3Storage) -> dict[str, bytes]:
    """Every object under the store's prefix: relative key → bytes."""
    found: dict[str, bytes] = {}
    prefix = store.settings.prefix + "/"
    async for batch in obstore.list(store.store, prefix):
        for meta in batch:
            got = await obstore.get_async(store.store, meta["path"])
            found[meta["path"].removeprefix(prefix)] = bytes(await got.bytes_async())
    return found


async def test_a_frame_is_stored_byte_for_byte_under_the_tree_key(store: S3Storage) -> None:
    stored = await store.save(Frame("CAM", T0, b"\xff\xd8jpeg\xff\xd9", {"n": 1}))
    assert stored.key == "CAM/2026/11/26/CAM_20261126T001503Z.jpg"
    got = await objects(store)
    assert got[stored.key] == b"\xff\xd8jpeg\xff\xd9"
    sidecar = got[stored.key.replace(".jpg", ".json")]
    assert json.loads(sidecar) == {"n": 1, "file": "CAM_20261126T001503Z.jpg"}
    assert sidecar == encode_sidecar(json.loads(sidecar))  # what every store writes


async def test_keys_are_create_only_and_a_retry_is_idempotent(store: S3Storage) -> None:
    first = await store.save(Frame("CAM", T0, b"one", {}))
    again = await store.save(Frame("CAM", T0, b"one", {}))  # a retry whose answer was lost
    other = await store.save(Frame("CAM", T0, b"two", {}))  # another frame, same second
    assert again.key == first.key
    assert other.key.endswith("CAM_20261126T001503Z_1.jpg")
    got = await objects(store)
    assert got[first.key] == b"one" and got[other.key] == b"two" and len(got) == 4


async def test_latest_finds_the_newest_frame_with_few_listings(store: S3Storage) -> None:
    assert await store.latest("CAM") is None
    for i, moment in enumerate([T0 - timedelta(days=40), T0 - timedelta(days=1), T0]):
        await store.save(Frame("CAM", moment, f"frame{i}".encode(), {"n": i}))
    await store.save(Frame("CAM", T0 - timedelta(hours=3), b"older", {"n": -1}))
    found = await store.latest("CAM")
    assert found is not None and found.sidecar["n"] == 2 and found.size == len(b"frame2")
    assert found.captured_at == T0


async def test_recover_deletes_a_jpeg_left_without_its_sidecar(store: S3Storage) -> None:
    kept = await store.save(Frame("CAM", T0, b"kept", {"n": 1}))
    orphan = "CAM/2026/11/26/CAM_20261126T001603Z.jpg"
    await obstore.put_async(store.store, f"{store.settings.prefix}/{orphan}", b"half")
    assert await store.recover("CAM") == 1
    assert set(await objects(store)) == {kept.key, kept.key.replace(".jpg", ".json")}


async def test_an_unreachable_server_is_a_one_line_store_error() -> None:
    dead = StorageSettings(kind="s3", endpoint="http://127.0.0.1:9", bucket="b", timeout=1)
    with pytest.raises(StoreError) as info:
        await S3Storage(dead, ("k", "s")).save(Frame("CAM", T0, b"x", {}))
    assert str(info.value).startswith("cannot store frame of CAM in s3://b: ")
    assert "\n" not in str(info.value) and "s3cr" not in str(info.value)


def test_credentials_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    plain = StorageSettings(kind="s3", bucket="b")
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    assert load_credentials(plain, env) == ("id", "secret")
    with pytest.raises(CredentialsError, match="AWS_SECRET_ACCESS_KEY missing from the env"):
        load_credentials(plain, {"AWS_ACCESS_KEY_ID": "id"})
    creds = tmp_path / "s3.env"
    creds.write_text("# lyoncam\nexport AWS_ACCESS_KEY_ID=fid\nAWS_SECRET_ACCESS_KEY='fs'\n")
    from_file = plain.model_copy(update={"credentials_file": creds})
    assert load_credentials(from_file, env) == ("fid", "fs")
    creds.write_text("AWS_ACCESS_KEY_ID=only-this\n")
    with pytest.raises(CredentialsError) as info:
        load_credentials(from_file, env)
    assert "only-this" not in str(info.value)  # a message never shows a secret


def bucket_config(tmp_path: Path, server: SeaweedS3, urls: dict[str, str], prefix: str,
                  interval: float = 0.1) -> object:
    return make_config(
        tmp_path, urls, interval=interval,
        extra=f"storage:\n  kind: s3\n  endpoint: {server.endpoint}\n  bucket: {server.bucket}"
              f"\n  prefix: {prefix}\n  timeout: 2")


async def test_the_daemon_captures_into_the_bucket_and_a_restart_stores_no_duplicate(
    s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    ids = camera_ids(3)
    async with CriterSimulator(ids, period=0.4, etag=False) as sim:
        config = bucket_config(tmp_path, s3, {i: sim.url(i) for i in ids}, "daemon")
        daemon = Daemon(config)  # type: ignore[arg-type]
        task = asyncio.create_task(daemon.run())
        await until(lambda: all(daemon.stats.camera(i).outcomes["stored"] >= 3 for i in ids),
                    "three frames per camera")
        daemon.request_stop()
        assert await task == 0
        served = {sha for c in ids for sha in sim.stats[c].served_sha256}
        # a restart within one period: the newest frame is read back from the bucket
        frozen = CriterSimulator(ids, period=600, etag=False)
        async with frozen:
            config2 = bucket_config(tmp_path, s3, {i: frozen.url(i) for i in ids}, "daemon")
            runs = [daemon]
            for _ in range(2):
                again = Daemon(config2)  # type: ignore[arg-type]
                runs.append(again)
                running = asyncio.create_task(again.run())
                await until(lambda d=again: all(d.stats.camera(i).polls >= 2 for i in ids),
                            "polls")
                again.request_stop()
                assert await running == 0
            served |= {sha for c in ids for sha in frozen.stats[c].served_sha256}
    # the second restart saw the frame the first one stored: it stored nothing
    assert all(runs[2].stats.cameras[i].outcomes["stored"] == 0 for i in ids)
    store = S3Storage(settings(s3, "daemon"), (ACCESS_KEY, SECRET_KEY))
    got = await objects(store)
    jpgs = {k: v for k, v in got.items() if k.endswith(".jpg")}
    # every stored frame is in the bucket once: as many objects as frames stored
    assert len(jpgs) == sum(d.stats.cameras[i].outcomes["stored"] for d in runs for i in ids)
    for key, data in jpgs.items():
        meta = json.loads(got[key.replace(".jpg", ".json")])
        assert meta["sha256"] == hashlib.sha256(data).hexdigest() in served  # bytes as served
        assert meta["file"] == Path(key).name


async def test_an_outage_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = SeaweedS3(tmp_path / "weed")
    server.start()
    try:
        await server.wait_ready()
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        ids = camera_ids(4)
        async with CriterSimulator(ids, period=0.5, etag=False) as sim:
            config = bucket_config(tmp_path / "data", server, {i: sim.url(i) for i in ids},
                                   "outage")
            daemon = Daemon(config)  # type: ignore[arg-type]
            with structlog.testing.capture_logs() as logs:
                task = asyncio.create_task(daemon.run())
                await until(lambda: daemon.stats.camera(ids[0]).outcomes["stored"] >= 2,
                            "frames before the outage")
                server.stop(kill=True)  # the bucket is gone for OUTAGE_S ...
                spool = daemon.stats.spool
                assert spool is not None
                await asyncio.sleep(OUTAGE_S)
                assert spool.frames >= 8, spool
                server.start()  # ... and back
                await server.wait_ready()
                await until(lambda: spool.frames == 0 and spool.uploaded >= 8,
                            "the spool drained", 90)
                daemon.request_stop()
                assert await task == 0
            served = {c: list(sim.stats[c].served_sha256) for c in ids}
        stored = {c: daemon.stats.cameras[c].outcomes["stored"] for c in ids}
        health = json.loads((tmp_path / "data" / ".lyoncam" / "health.json").read_text())
        store = S3Storage(settings(server, "outage"), (ACCESS_KEY, SECRET_KEY))
        got = await objects(store)
    finally:
        server.stop()
    jpgs = {k: hashlib.sha256(v).hexdigest() for k, v in got.items() if k.endswith(".jpg")}
    for c in ids:
        in_bucket = [jpgs[k] for k in sorted(jpgs) if k.startswith(f"{c}/")]
        assert len(in_bucket) == stored[c], c  # every stored frame arrived, once
        assert set(in_bucket) <= set(served[c])
        # in capture order, no frame twice in a row (the simulator's pictures cycle, so the
        # same bytes may come back minutes later: that is a new frame, not a duplicate)
        assert all(a != b for a, b in itertools.pairwise(in_bucket)), c
    events = [e["event"] for e in logs]
    assert events.count("object store unreachable; spooling frames locally") == 1
    assert "object store back; spool drained" in events
    assert health["storage"]["spool"]["frames"] == 0
    assert health["storage"]["spool"]["uploaded"] >= 8
    assert not list((tmp_path / "data" / ".lyoncam" / "spool").rglob("*.jpg"))


async def test_an_identical_picture_stored_earlier_is_not_taken_for_a_retry(
    store: S3Storage,
) -> None:
    """A frozen camera can send the same bytes again: a new frame, under the next key."""
    first = await store.save(Frame("CAM", T0, b"frozen", {"captured_at": "first"}))
    later = await store.save(Frame("CAM", T0, b"frozen", {"captured_at": "later"}))
    assert later.key != first.key and later.key.endswith("_1.jpg")
    found = await store.latest("CAM")
    assert found is not None and found.key == later.key


# --- wrong credentials: not an outage --------------------------------------------------------


async def test_credentials_refused_at_start_are_a_start_up_error_naming_the_bucket(
    s3: SeaweedS3, tmp_path: Path,
) -> None:
    import os
    import sys

    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nweather:\n  enabled: false\n"
                   f"storage:\n  kind: s3\n  endpoint: {s3.endpoint}\n  bucket: {s3.bucket}\n"
                   "cameras:\n  - id: D1\n    url: http://127.0.0.1:9/D1.JPG\n")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg), "--status-port",
        "0", "--log-format", "json", stderr=asyncio.subprocess.PIPE, env=env)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    line = err.decode().strip().splitlines()[-1]
    assert line.startswith(f"error: storage: s3://{s3.bucket}: access denied (")
    assert line.endswith(f"the credentials are wrong or not allowed on bucket {s3.bucket}")
    assert "wrong-secret" not in err.decode()
    assert not list((tmp_path / "data").rglob("*.jpg"))  # nothing spooled


async def _scrape(url: str) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


def store_state(metrics: str) -> str:
    [on] = [line.split('"')[1] for line in metrics.splitlines()
            if line.startswith("lyoncam_object_store_state{") and line.endswith(" 1.0")]
    return on


async def test_credentials_refused_later_are_their_own_condition_not_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bucket starts refusing our keys (rotated on the server): logs, /healthz and
    /metrics say `denied`, apart from the `unreachable` of a stopped server; both end when
    the right keys work again, and every frame arrives once."""
    server = SeaweedS3(tmp_path / "weed")
    server.start()
    try:
        await server.wait_ready()
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        async with CriterSimulator(["K1"], period=0.3) as sim:
            config = make_config(
                tmp_path / "data", {"K1": sim.url("K1")}, interval=0.2, status="status:\n  port: 0",
                extra=f"storage:\n  kind: s3\n  endpoint: {server.endpoint}\n  bucket: "
                      f"{server.bucket}\n  prefix: rekey\n  timeout: 2")
            with structlog.testing.capture_logs() as logs:
                daemon = Daemon(config)
                task = asyncio.create_task(daemon.run())
                await until(lambda: daemon.stats.camera("K1").outcomes["stored"] >= 2,
                            "frames in the bucket", 30)
                assert daemon.status_url is not None
                base = daemon.status_url
                assert store_state((await _scrape(base + "metrics"))[1]) == "ok"
                spool = daemon.stats.spool
                assert spool is not None

                server.stop()  # keys rotated on the server: ours are now wrong
                server.access_key, server.secret_key = "rotated", "rotated-secret-0123456789"
                server.start()
                await server.wait_ready()
                await until(lambda: spool.store == "denied" and spool.frames >= 2,
                            "uploads refused", 30)
                status, body = await _scrape(base + "healthz")
                assert status == 503 and "object store refuses the credentials" in body
                assert store_state((await _scrape(base + "metrics"))[1]) == "denied"

                server.stop()  # now down altogether: an outage, which is something else
                await until(lambda: spool.store == "unreachable", "the outage seen", 30)
                assert store_state((await _scrape(base + "metrics"))[1]) == "unreachable"
                assert "refuses the credentials" not in (await _scrape(base + "healthz"))[1]

                server.access_key, server.secret_key = ACCESS_KEY, SECRET_KEY
                server.start()
                await server.wait_ready()
                await until(lambda: spool.store == "ok" and spool.frames == 0, "drained", 60)
                daemon.request_stop()
                assert await task == 0
        store = S3Storage(settings(server, "rekey"), (ACCESS_KEY, SECRET_KEY))
        jpgs = [k for k in await objects(store) if k.endswith(".jpg")]
    finally:
        server.stop()
    events = [e["event"] for e in logs]
    assert events.count("object store refuses the credentials; spooling frames locally") == 1
    assert "object store unreachable; spooling frames locally" in events
    assert len(jpgs) == daemon.stats.cameras["K1"].outcomes["stored"]


async def test_after_a_restart_the_local_test_reference_is_rebuilt_from_the_bucket(
    s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest frame is read back from the bucket at start and decoded again: a copy of
    it is dropped (not stored as a first frame), a 32 px person is found by the tile test."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    async with serving() as scene:
        cfg = bucket_config(tmp_path, s3, {"CAM": scene.url}, "reference")
        scene.body = poll(1)
        await run_until(cfg, lambda d: d.stats.camera("CAM").outcomes["stored"] >= 1,  # type: ignore[arg-type]
                        "first frame")
        scene.body = poll(2)
        again = await run_until(
            cfg, lambda d: d.stats.camera("CAM").outcomes["near_duplicate"] >= 2,  # type: ignore[arg-type]
            "copies judged")
        assert again.stats.camera("CAM").outcomes["stored"] == 0
        scene.body = poll(3, with_person=32)
        await run_until(cfg, lambda d: d.stats.camera("CAM").outcomes["stored"] >= 1,  # type: ignore[arg-type]
                        "the person's frame")
    store = S3Storage(settings(s3, "reference"), (ACCESS_KEY, SECRET_KEY))
    newest = await store.latest("CAM")
    assert newest is not None
    assert newest.sidecar["change"]["reason"] == "tile"
    assert await store.read(newest.key) == poll(3, with_person=32)  # the bytes as served
    with pytest.raises(StoreError, match=r"missing\.jpg"):
        await store.read("CAM/missing.jpg")
