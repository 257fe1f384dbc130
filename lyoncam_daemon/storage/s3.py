"""Frames as objects in an S3-compatible bucket, under the same keys as the dated tree.

Every object is written create-only (`If-None-Match: *`): a retry, or a second daemon that
polled the same camera in the same second, can never overwrite a frame; it takes the next
`_n` key instead, as the filesystem store does. The JPEG goes first and its sidecar second,
so a frame is complete once its sidecar exists; an orphan JPEG left by a crash between the
two is deleted at the next start (`recover`). Restart recovery lists only the newest
year/month/day prefixes of a camera: a few list calls, not a scan of the bucket.

The client is obstore (Rust's object_store): async, one small dependency. Its own retries
are bounded by `timeout`, so an unreachable server is reported quickly and the frame goes
to the spool (spool.py) instead of holding the camera.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from lyoncam_daemon.config import StorageSettings
from lyoncam_daemon.config.files import SmallFileError, read_small_file
from lyoncam_daemon.storage import Frame, StoreDenied, StoredFrame, StoreError, encode_sidecar
from lyoncam_daemon.storage.layout import frame_key, parse_frame_stem

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

_DIGITS = re.compile(r"^\d+$")
_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class CredentialsError(Exception):
    """No usable S3 credentials; the message names where they were looked for, never them."""


def load_credentials(settings: StorageSettings,
                     environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(key id, secret) from `credentials_file` if set, else the environment."""
    env = os.environ if environ is None else environ
    source = "the environment"
    values: dict[str, str] = {k: env[k] for k in _KEYS if env.get(k)}
    if settings.credentials_file is not None:
        source = str(settings.credentials_file)
        try:
            text = read_small_file(settings.credentials_file).decode("utf-8")
        except (SmallFileError, UnicodeDecodeError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise CredentialsError(f"storage.credentials_file {source}: {reason}") from None
        values = _env_file(text)
    missing = [k for k in _KEYS if not values.get(k)]
    if missing:
        raise CredentialsError(f"no S3 credentials: {' and '.join(missing)} missing from "
                               f"{source}")
    return values[_KEYS[0]], values[_KEYS[1]]


def _env_file(text: str) -> dict[str, str]:
    """KEY=value lines (`export` and quotes allowed), as EnvironmentFile and --env-file."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("export ").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found[key.strip()] = value.strip().strip("'\"")
    return found


class S3Storage:
    """Implements `storage.Storage` on a bucket; see the module docstring."""

    def __init__(self, settings: StorageSettings, credentials: tuple[str, str]) -> None:
        if settings.bucket is None:
            raise ValueError("an S3 store needs a bucket")
        self.settings = settings
        self.where = f"s3://{settings.bucket}/{settings.prefix}".rstrip("/")
        client: ClientConfig = {
            "timeout": timedelta(seconds=settings.timeout),
            "connect_timeout": timedelta(seconds=min(settings.timeout, 5.0)),
        }
        retry: RetryConfig = {"max_retries": 2,
                              "retry_timeout": timedelta(seconds=settings.timeout)}
        options: dict[str, Any] = {"region": settings.region}
        if settings.endpoint is not None:
            options["endpoint"] = settings.endpoint
            options["virtual_hosted_style_request"] = False
            client["allow_http"] = settings.endpoint.startswith("http://")
        self.store = S3Store(
            settings.bucket, access_key_id=credentials[0], secret_access_key=credentials[1],
            client_options=client, retry_config=retry, **options)

    def _path(self, key: str) -> str:
        return f"{self.settings.prefix}/{key}" if self.settings.prefix else key

    async def open(self) -> None:
        """Ask the bucket once (a listing, as the start-up recovery makes): credentials it
        refuses are a start-up error naming the bucket (StoreDenied), not weeks of frames
        spooled as if it were down. An unreachable store is left to the spool."""
        try:
            await obstore.list_with_delimiter_async(self.store, self._path("") or None)
        except BaseError as exc:
            if _denied(exc):
                raise self._refusal(exc) from None

    def _refusal(self, exc: BaseError) -> StoreDenied:
        return StoreDenied(f"{self.where}: access denied ({_short(exc)}): the credentials "
                           f"are wrong or not allowed on bucket {self.settings.bucket}")

    def _failure(self, what: str, exc: BaseError) -> StoreError:
        """The StoreError of a failed call: StoreDenied when the store refuses us."""
        if _denied(exc):
            return StoreDenied(f"{what}: {self._refusal(exc)}")
        return StoreError(f"{what} in {self.where}: {_short(exc)}")

    async def close(self) -> None:
        """Nothing to release."""

    async def save(self, frame: Frame) -> StoredFrame:
        try:
            for n in itertools.count():
                key = frame_key(frame.camera_id, frame.captured_at, n)
                jpg = await self._create(key, frame.data)
                if jpg == "taken":
                    continue
                sidecar = {**frame.sidecar, "file": Path(key).name}
                side = await self._create(key.removesuffix(".jpg") + ".json",
                                          encode_sidecar(sidecar))
                if side != "taken":
                    break
                if jpg == "new":  # cannot happen unless someone writes sidecars by hand
                    raise StoreError(f"cannot store frame of {frame.camera_id} in "
                                     f"{self.where}: {key} has another frame's sidecar")
                # The same bytes under another frame's sidecar: an identical picture stored
                # earlier (a frozen camera), not our retry. Take the next key.
        except BaseError as exc:
            raise self._failure(f"cannot store frame of {frame.camera_id}", exc) from None
        return StoredFrame(frame.camera_id, key, frame.captured_at, len(frame.data), sidecar)

    async def _create(self, key: str, data: bytes) -> Literal["new", "same", "taken"]:
        """Put unless the key exists: "new"; "same" if it holds these very bytes, else
        "taken".

        The same JPEG and the same sidecar already there are ours: an earlier attempt whose
        answer was lost (a timeout, an outage). Taking the key again makes a retry idempotent
        instead of a duplicate under the next `_n` name. (A single-part put's ETag is its
        MD5.)
        """
        path = self._path(key)
        try:
            await obstore.put_async(self.store, path, data, mode="create")
        except AlreadyExistsError:
            meta = await obstore.head_async(self.store, path)
            etag = (meta.get("e_tag") or "").strip('"')
            same = etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
            return "same" if same else "taken"
        return "new"

    async def latest(self, camera_id: str) -> StoredFrame | None:
        try:
            for day in await self._days_newest_first(camera_id):
                found = await self._newest_in(camera_id, day)
                if found is not None:
                    return found
        except BaseError as exc:
            raise self._failure(f"cannot list frames of {camera_id}", exc) from None
        return None

    async def _newest_in(self, camera_id: str, day: str) -> StoredFrame | None:
        listing = await obstore.list_with_delimiter_async(self.store, self._path(day) + "/")
        objects = {Path(o["path"]).name: o["size"] for o in listing["objects"]}
        for name in sorted(objects, reverse=True):
            stem, _, ext = name.rpartition(".")
            parsed = parse_frame_stem(stem)
            if ext != "json" or parsed is None or f"{stem}.jpg" not in objects:
                continue
            key = f"{day}/{stem}.jpg"
            try:
                got = await obstore.get_async(self.store, self._path(f"{day}/{name}"))
                meta = json.loads(bytes(await got.bytes_async()))
            except (NotFoundError, ValueError):
                continue
            if isinstance(meta, dict):
                return StoredFrame(camera_id, key, parsed[1], objects[f"{stem}.jpg"], meta)
        return None

    async def _days_newest_first(self, camera_id: str) -> list[str]:
        """Day prefixes of a camera, newest first, listing only as deep as needed."""
        days: list[str] = []
        for year in await self._subdirs(camera_id):
            for month in await self._subdirs(year):
                days += await self._subdirs(month)
                if days:
                    return days
        return days

    async def _subdirs(self, prefix: str) -> list[str]:
        listing = await obstore.list_with_delimiter_async(self.store, self._path(prefix) + "/")
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]]
        return [f"{prefix}/{n}" for n in sorted((n for n in names if _DIGITS.match(n)),
                                                  key=int, reverse=True)]

    async def read(self, key: str) -> bytes:
        try:
            got = await obstore.get_async(self.store, self._path(key))
            return bytes(await got.bytes_async())
        except (BaseError, OSError) as exc:  # a missing key is a FileNotFoundError
            raise StoreError(f"cannot read {key} from {self.where}: {_short(exc)}") from None

    async def recover(self, camera_id: str) -> int:
        """Delete JPEGs of the newest day that have no sidecar (a crash between the puts)."""
        try:
            days = await self._days_newest_first(camera_id)
            if not days:
                return 0
            listing = await obstore.list_with_delimiter_async(
                self.store, self._path(days[0]) + "/")
            names = {Path(o["path"]).name for o in listing["objects"]}
            orphans = [n for n in names if n.endswith(".jpg")
                       and n.removesuffix(".jpg") + ".json" not in names]
            for name in orphans:
                await obstore.delete_async(self.store, self._path(f"{days[0]}/{name}"))
        except BaseError as exc:
            raise self._failure(f"cannot repair frames of {camera_id}", exc) from None
        return len(orphans)


def _denied(exc: BaseException) -> bool:
    """The store refused our credentials (401/403). obstore says so by type for object
    calls, but only in the text for a listing (measured against SeaweedFS)."""
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return True
    return re.search(r"\b(401 Unauthorized|403 Forbidden)\b", str(exc)) is not None


def _short(exc: BaseException) -> str:
    """obstore's messages run over lines and repeat the URL; keep the first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
