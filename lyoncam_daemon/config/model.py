"""The `cameras.yaml` schema: validated, frozen, every default visible here.

Like Frigate's camera config, unknown keys are errors: a typo such as `intervall: 30`
must not silently fall back to the default for months. Errors name the file, the line,
the camera and the field, one line each, so `check` and `run` can print them as they are.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from lyoncam_daemon import __version__
from lyoncam_daemon.config.shard import Shard, parse_shard

#: Sub-10 s polling only re-downloads the same bytes (CriTer republishes once a minute) and
#: the platform asks clients not to poll faster than the data set changes.
MIN_INTERVAL_S = 10.0
#: No setting needs more than a week: a larger one is a typo (or `1e300`), refused here with
#: its line rather than left for the schedule and the health record to cope with.
MAX_DURATION_S = 7 * 24 * 3600.0
#: JPEG dimensions are 16-bit: an ignore rectangle beyond this can only be a typo.
MAX_PIXEL_COORD = 65535
#: cameras.yaml written like the repository's takes ~215 bytes per camera: 12 MiB is about
#: 58 000 cameras, room for the 20 000 one daemon can poll and a catalogue beside them.
#: Bigger files are refused before they are read (a 50 MB file took 98 s and 2.9 GB in
#: `check`).
MAX_CONFIG_BYTES = 12 * 2**20
#: YAML values (nodes) in a file; each costs ~1 KB while parsing. A 20 000-camera file has
#: ~220 000, and a 12 MiB flow list of zeros would have 6 million (6 GB) without this cap.
MAX_CONFIG_NODES = 600_000

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: A number as YAML 1.2 and JSON write it: `1e9`, `2.5E+3`, `.5`. PyYAML follows YAML 1.1,
#: whose floats need a dot and a signed exponent, so it hands `interval: 1e9` over as the
#: string "1e9": durations, sizes and counts accept such strings. (Reading them as numbers in
#: the loader instead would turn `name: 1e5`, which PyYAML's own dumper writes unquoted, into
#: a float.)
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_DURATION_RE = re.compile(rf"^\s*({_NUMBER})\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE = re.compile(rf"^\s*({_NUMBER})\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30,
    None: 1,
}


def shown(value: object, limit: int = 40) -> str:
    """A value for an error line: its repr, one line, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


_DURATION_HINT = "must be a number of seconds or a duration such as '90s' or '2m'"
_SIZE_HINT = "must be a number of bytes or a size such as '8MB'"


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"2m"``, ``"500ms"``, ``"1e3"``."""
    seconds: float | None = None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    except OverflowError:  # float() of a 400-digit integer
        seconds = math.inf
    if seconds is None:
        raise ValueError(f"{_DURATION_HINT}, not {shown(value)}")
    if not math.isfinite(seconds):
        # NaN or infinity would pass every `<` check and then kill the camera's schedule.
        raise ValueError(f"must be a finite number of seconds, not {shown(value)}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"must be at most {MAX_DURATION_S:g} s (a week), not {shown(value)}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as ``"8MB"``, ``"512 KiB"`` or ``"8e6"``."""
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = float(m.group(1)) * _SIZE_UNITS[unit]
    if size is None or not math.isfinite(size):
        raise ValueError(f"{_SIZE_HINT}, not {shown(value)}")
    return int(size)


def parse_count(value: object) -> object:
    """An integer written with an exponent (`5e7`, as a string, see _NUMBER) as that integer;
    anything else is left for pydantic's own integer check."""
    if isinstance(value, str) and re.fullmatch(rf"\s*{_NUMBER}\s*", value):
        number = float(value)
        if number.is_integer():
            return int(number)
    return value


def _usable_path(path: Path) -> Path:
    """No NUL byte (every OS call would refuse it), and `~` expanded now: `~nobody/x` is an
    error with its line here, not a crash when the path is used."""
    if "\0" in str(path):
        raise ValueError("must not contain a NUL byte")
    try:
        return path.expanduser()
    except RuntimeError:
        raise ValueError(f"cannot find the home folder in {shown(str(path))}") from None


def check_url(url: str) -> str:
    """`url` if a camera can be polled at it, else ValueError saying why: aiohttp would refuse
    it on every poll, long after `check` said the file was fine. The value is not repeated
    in the message: a URL may carry a user:password@ (the line number finds it)."""
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError("must be a URL without spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    try:
        port = parts.port  # raises ValueError on a port out of range or not a number
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    return url


def host_port(netloc: str) -> str:
    """A URL's netloc without its `user:password@`: what may be shown, logged or used as a
    key (the one place that rule is written)."""
    return netloc.rpartition("@")[2]


def public_url(url: str) -> str:
    """`url` as it may be written down (sidecars, datasets, buckets): no `user:password@`,
    no fragment, and the query's names without their values (`?token=`), so a dataset
    shared later carries no camera's credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = host_port(parts.netloc)
    query = "&".join(pair.partition("=")[0] + "=" for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def fingerprint_bits(hash_size: int) -> int:
    """Bits in a fingerprint: every algorithm of frames/fingerprint.py makes a hash_size x
    hash_size grid (tests/config/test_config.py checks this against its fingerprint)."""
    return hash_size * hash_size


Duration = Annotated[float, BeforeValidator(parse_duration)]
FilePath = Annotated[Path, AfterValidator(_usable_path)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
Count = Annotated[int, BeforeValidator(parse_count)]
#: A rectangle in full-frame pixels: x, y, width, height.
Rect = tuple[int, int, int, int]


def _at_least_floor(v: float, info: ValidationInfo) -> float:
    floor = (info.context or {}).get("min_interval", MIN_INTERVAL_S)
    if v < floor:
        raise ValueError(f"must be at least {floor:g} s")
    return v


class _Model(BaseModel):
    # No NaN or infinity anywhere: they pass every range check the wrong way.
    # Attribute docstrings are the fields' descriptions: the configuration reference in
    # docs/ is generated from them (reference.py).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


class HttpSettings(_Model):
    """How lyoncam talks to the camera server."""

    user_agent: str = f"lyoncam/{__version__} (+https://github.com/lyoncam/lyoncam)"
    """Sent with every request."""

    max_concurrent: Count = Field(8, ge=1)
    """Requests in flight, all cameras together."""
    max_per_host: Count = Field(4, ge=1)
    """Requests in flight to one host: all CriTer cameras share one, which "is not sized for heavy
    load"."""
    max_frame_bytes: ByteSize = Field(8_000_000, ge=1024)
    """A larger body is a fetch error (`errors.too_large`, with backoff), never a memory spike
    (CriTer frames are 280-610 KB)."""
    connect_timeout: Duration = Field(10.0, gt=0)
    """Seconds to connect."""
    follow_redirects: bool = True
    """Follow a camera's redirects, only ever to its own scheme, host and port (a redirect
    elsewhere is the error `redirect_refused`); false refuses every redirect."""

    @field_validator("user_agent")
    @classmethod
    def _header_safe(cls, v: str) -> str:
        # aiohttp refuses a header with a line break on every request: refuse it here instead.
        if not v.isprintable():
            raise ValueError(f"must be printable text on one line, not {shown(v)}")
        return v


class RetrySettings(_Model):
    """Per-camera backoff after a failed poll; other cameras are never affected."""

    backoff_initial: Duration = 15.0
    """First retry delay after a failure, at least 10 s (retries are polls too); it doubles with
    each failure, plus up to 25 % jitter."""
    backoff_max: Duration = 300.0
    """Cap of that delay: at least 10 s, and at least `backoff_initial`."""
    down_after: Duration = Field(900.0, gt=0)
    """Failing continuously this long marks the camera `down` ..."""
    down_probe_interval: Duration = 600.0
    """... and a down camera is then probed this often (at least 10 s)."""

    @field_validator("backoff_initial", "backoff_max", "down_probe_interval")
    @classmethod
    def _retry_floor(cls, v: float, info: ValidationInfo) -> float:
        return _at_least_floor(v, info)

    @model_validator(mode="after")
    def _max_over_initial(self) -> RetrySettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        return self


class StorageSettings(_Model):
    """Where frames go: the dated tree under data_dir, or an S3-compatible bucket.

    Credentials never live here: they come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in
    the environment or from `credentials_file` (KEY=value lines, as systemd's
    EnvironmentFile and `docker --env-file` read them).
    """

    kind: Literal["filesystem", "s3"] = "filesystem"
    """`filesystem` (the dated tree under `data_dir`) or `s3`."""
    endpoint: str | None = None
    """The S3 server's URL (SeaweedFS, MinIO, Garage...); unset means AWS itself."""
    bucket: str | None = None
    """The bucket; required for `s3`."""
    prefix: str = ""
    """Keys are `<prefix>/<camera>/<YYYY>/<MM>/<DD>/<camera>_<UTC>.jpg`, as in the dated tree."""
    region: str = "us-east-1"
    """The bucket's region."""
    credentials_file: FilePath | None = None
    """A `KEY=value` file holding `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (as systemd's
    `EnvironmentFile=` and `docker --env-file` read it); unset, they come from the environment.
    Never the keys themselves in this file."""
    spool_max_bytes: ByteSize = Field(2_000_000_000, ge=0)
    """Frames kept on local disk (`data_dir/.lyoncam/spool`) while the bucket is unreachable,
    uploaded in order when it is back; beyond this, frames are refused and counted."""
    timeout: Duration = Field(20.0, gt=0)
    """Seconds for one upload before the frame goes to the spool instead."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return v.strip("/")

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StorageSettings:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("kind s3 needs a bucket")
        return self


class LogSettings(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    """`json` lines, `console`, or `auto`: JSON lines unless stderr is a terminal."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """`debug` adds one line per frame."""
    summary_interval: Duration = Field(300.0, gt=0)
    """Seconds between one-line capture summaries."""


class DedupSettings(_Model):
    """How frames are judged, for all cameras: the perceptual fingerprint
    (frames/fingerprint.py), the local change test (frames/change.py), the judge
    (frames/judge.py)."""

    hash: Literal["phash", "dhash", "ahash", "whash"] = "phash"
    """The perceptual hash."""
    hash_size: Count = Field(64, ge=4, le=64)
    """Hash side: 64 gives a 4096-bit phash. Measured on frames built from a real CriTer frame
    (`bench/dedup.py`): re-encodes, noise and flicker stay within 56 bits, a car-sized change
    starts at 78 (124 in the benchmark's own labelled set); a 16x16 phash cannot separate a
    moved car from noise (copies up to 4 bits, some new scenes at 0). A power of 2 for `whash`."""
    workers: Count = Field(2, ge=1, le=64)
    """Threads decoding and hashing frames off the event loop."""
    max_pixels: Count = Field(50_000_000, ge=1)
    """Frames with more pixels than this are refused before decoding (decompression bombs)."""
    placeholder_images: tuple[FilePath, ...] = ()
    """Extra "camera unavailable" images, matched perceptually (paths relative to the config
    file's folder)."""
    sensitivity: float = Field(1.0, gt=0, le=10)
    """How small a change in one 8 px patch makes a frame new (the local change test beside
    the fingerprint). 1 is the threshold chosen on `bench/dedup.py`'s tuning half; 2 halves
    it (smaller changes kept, more noise stored), 0.5 doubles it. Each camera raises it
    further by the noise it learns from its own frames."""
    keep_every: Duration = Field(1800.0, ge=0)
    """Store one frame per period even when nothing changed (marked `heartbeat` in the
    sidecar's `change`), so slow changes such as dusk, fog or rain on an empty road reach the
    dataset. 0 turns it off."""

    @model_validator(mode="after")
    def _whash_needs_power_of_two(self) -> DedupSettings:
        if self.hash == "whash" and self.hash_size & (self.hash_size - 1):
            raise ValueError("hash_size must be a power of 2 for whash")
        return self


class StatusSettings(_Model):
    """The HTTP endpoint of the daemon: `/metrics`, `/healthz` and the status page `/`."""

    enabled: bool = True
    """Serve `/metrics`, `/healthz` and the status page."""
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default: the page shows every camera's latest frame to whoever
    reaches it."""
    port: int = Field(9120, ge=0, le=65535)
    """`0` picks a free port (logged in the `started` line), as `run --status-port 0` does;
    `run --status-port` overrides it. A shard I/N listens on this port + I - 1 (see
    `shard_offset`). `enabled: false` (`run --no-status`) turns the endpoint off."""
    shard_offset: bool = True
    """Shard I/N listens on `port` + I - 1, so shards of one config started on one machine each
    have their own port. Set it to `false` where every shard has an address of its own and the
    same port everywhere (Kubernetes pods)."""
    camera_metrics: bool = True
    """Series per camera in `/metrics` beside the daemon-wide ones. Turn off beyond a few thousand
    cameras: 20,000 cameras make about a million series, more than a scrape should carry."""


class RetentionSettings(_Model):
    """What the daemon deletes so the disk never fills: by age, then by size (the most common
    cells first, or oldest whole days first)."""

    max_age_days: float | None = Field(None, gt=0)
    """Frames older than this many days are deleted (whole days); `null` keeps them."""
    max_bytes: ByteSize | None = Field(None, ge=1)
    """Frames beyond this total size are deleted, oldest first; `null` for no limit."""
    min_free_bytes: ByteSize = Field(1_000_000_000, ge=0)
    """Below this much free space on the data disk, storing pauses until space returns."""
    interval: Duration = Field(3600.0, gt=0)
    """Seconds between retention passes (the first runs at start)."""
    keep_variety: bool = True
    """When `max_bytes` forces deletion, delete first from the most common (camera, daypart,
    weather) cells, oldest first within a cell, never a camera's newest frame nor a cell's
    last 20 frames (read from the index); `false` deletes oldest days first. `max_age_days`
    always deletes by age."""


class WeatherSettings(_Model):
    """Open-Meteo current conditions in each sidecar (enrich/weather.py)."""

    enabled: bool = True
    """Add Open-Meteo's current conditions to each sidecar of a camera with `lat` and `lon` (no key
    needed)."""
    url: str = "https://api.open-meteo.com/v1/forecast"
    """The forecast endpoint; its `current=` values come from 15-minute model data."""
    archive_url: str = "https://archive-api.open-meteo.com/v1/archive"
    """Past days, for `enrich --backfill` (hourly values)."""
    cell_degrees: float = Field(0.1, gt=0, le=10)
    """Cameras within one cell of this many degrees (0.1° ≈ 8-11 km) share one request per
    15-minute slot."""
    max_calls_per_minute: int = Field(4, ge=1, le=60)
    """Never more requests than this, whatever fails. Open-Meteo is free under 10,000 calls a day:
    a few a minute stays far below it."""
    timeout: Duration = Field(10.0, gt=0)
    """Seconds for one request; a frame waits 1.5 s at most, then gets `weather: null`."""

    @field_validator("url", "archive_url")
    @classmethod
    def _weather_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return v


class Tuning(_Model):
    """Settings each camera may override; `defaults:` sets them for all cameras."""

    interval: Duration = 60.0
    """Seconds between polls, on a fixed-rate schedule; at least 10."""
    timeout: Duration = Field(20.0, gt=0)
    """Seconds for one whole request, body included."""
    threshold: Count = Field(64, ge=0)
    """Near-duplicate distance in bits: a frame this close to the camera's last stored frame, or
    closer, is dropped. Less than the `hash_size`² bits of a fingerprint (at that many every
    frame would be a near-duplicate). 64 of 4096 bits sits between the worst copy (56) and the
    weakest new scene (78), erring towards keeping: an occasional duplicate is cheaper than a
    lost vehicle."""
    truncated: Literal["drop", "keep"] = "drop"
    """`drop` truncated JPEGs (no end-of-image marker), or `keep` them, flagged `truncated: true`
    in the sidecar."""
    stale_after: float = Field(10.0, gt=0)
    """Intervals without a new stored frame before the camera is reported `stale`."""
    ignore: tuple[Rect, ...] = ()
    """Rectangles `[x, y, w, h]` in full-frame pixels that the near-duplicate check ignores: the
    timestamp overlay, sky, trees."""
    mask: FilePath | None = None
    """Mask image (a path relative to the config file's folder): white is compared, black
    ignored."""

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, v: float, info: ValidationInfo) -> float:
        return _at_least_floor(v, info)

    @field_validator("ignore")
    @classmethod
    def _rects(cls, v: tuple[Rect, ...]) -> tuple[Rect, ...]:
        for x, y, w, h in v:
            if x < 0 or y < 0 or w <= 0 or h <= 0 or max(x, y, w, h) > MAX_PIXEL_COORD:
                raise ValueError("each rectangle is [x, y, width, height] with width, height > 0"
                                 f" and all at most {MAX_PIXEL_COORD}, not {shown([x, y, w, h])}")
        return v


class CameraConfig(Tuning):
    """One camera. Fields left out take the value under `defaults:`."""

    id: str
    """`[A-Za-z0-9_-]{1,64}`, unique; becomes a folder name, hence the strict pattern."""
    url: str
    """`http://` or `https://` URL of the still image: a host, a port from 1 to 65535 if any, no
    spaces."""
    name: str = ""
    """Copied to each sidecar."""
    lat: float | None = Field(None, ge=-90, le=90)
    """Latitude, copied to each sidecar; with `lon`, it gives frames their daylight and weather."""
    lon: float | None = Field(None, ge=-180, le=180)
    """Longitude, copied to each sidecar."""
    enabled: bool = True
    """`false` keeps the camera listed but not polled."""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CAMERA_ID_RE.fullmatch(v):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ -")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v)


class Config(_Model):
    """The whole file."""

    data_dir: FilePath = Path("./data")
    """Where frames go (`run --data-dir` overrides): a folder, or one that can be created. A
    relative path is taken from the config file's folder."""
    shutdown_grace: Duration = Field(10.0, ge=0)
    """Seconds to let in-flight fetches and writes finish on SIGTERM before cancelling."""
    http: HttpSettings = HttpSettings()
    """How lyoncam talks to the camera servers."""
    storage: StorageSettings = StorageSettings()
    """Where frames go: the dated tree under `data_dir`, or an S3-compatible bucket."""
    retry: RetrySettings = RetrySettings()
    """Per-camera backoff after a failed poll; other cameras are never affected."""
    log: LogSettings = LogSettings()
    """Log lines, on stderr."""
    dedup: DedupSettings = DedupSettings()
    """The perceptual fingerprint that finds near-duplicates, shared by all cameras."""
    status: StatusSettings = StatusSettings()
    """The daemon's HTTP endpoint: `/metrics`, `/healthz` and the status page `/`."""
    retention: RetentionSettings = RetentionSettings()
    """What the daemon deletes so the disk never fills: by age, then by size (the most common
    cells first, or oldest whole days first)."""
    weather: WeatherSettings = WeatherSettings()
    """Open-Meteo's current conditions in each sidecar of a camera with `lat` and `lon`."""
    placeholder_sha256: tuple[str, ...] = ()
    """Extra SHA-256s (64 lowercase hex digits) of "camera unavailable" images; the known CriTer
    "Image indisponible" one is built in."""
    defaults: Tuning = Tuning()
    """Settings every camera takes unless it sets its own."""
    cameras: tuple[CameraConfig, ...]
    """The cameras, a list of mappings; `id` and `url` are required."""
    shard: Shard | None = None
    """`I/N`: poll only the enabled cameras that shard I of N owns, so N daemons with the same file
    cover every camera once (`LYONCAM_SHARD` overrides it, and `run --shard` both)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        """Copy `defaults:` into each camera that does not set the key itself."""
        if not isinstance(data, Mapping):
            return data
        defaults = data.get("defaults") or {}
        cameras = data.get("cameras")
        if not isinstance(defaults, Mapping) or not isinstance(cameras, list | tuple):
            return data
        merged = [
            {**defaults, **cam} if isinstance(cam, Mapping) else cam for cam in cameras
        ]
        return {**data, "cameras": merged}

    @field_validator("cameras", mode="before")
    @classmethod
    def _cameras_list(cls, v: Any) -> Any:
        # pydantic would iterate a string or a set; a camera list is a YAML list.
        if not isinstance(v, list | tuple):
            raise ValueError("must be a list of cameras")
        return v

    @model_validator(mode="after")
    def _threshold_within_bits(self) -> Config:
        """A threshold at or over the fingerprint's bits makes every frame a near-duplicate:
        capture would stop silently after each camera's first frame."""
        bits = fingerprint_bits(self.dedup.hash_size)
        what = f"the {bits} bits of a {self.dedup.hash_size}x{self.dedup.hash_size} " \
            f"{self.dedup.hash} (dedup.hash_size)"
        errors: list[InitErrorDetails] = []

        def refuse(loc: tuple[str | int, ...], threshold: int, message: str) -> None:
            errors.append(InitErrorDetails(type=PydanticCustomError("threshold_bits", message),
                                           loc=loc, input=threshold))

        if self.defaults.threshold >= bits:
            if "threshold" in self.defaults.model_fields_set:
                refuse(("defaults", "threshold"), self.defaults.threshold,
                       f"must be less than {what}, not {self.defaults.threshold}")
            else:  # the built-in default: the fix is a threshold for this hash size
                refuse(("dedup", "hash_size"), self.dedup.hash_size,
                       f"{what} are not more than the default threshold "
                       f"{self.defaults.threshold}: set defaults.threshold")
        for i, cam in enumerate(self.cameras):
            # Cameras that took the threshold from `defaults:` are reported there, once.
            if cam.threshold >= bits and "threshold" in cam.model_fields_set:
                refuse(("cameras", i, "threshold"), cam.threshold,
                       f"must be less than {what}, not {cam.threshold}")
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @field_validator("placeholder_sha256")
    @classmethod
    def _sha(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            if not SHA256_RE.fullmatch(s):
                raise ValueError(f"{s!r} is not 64 lowercase hex digits")
        return v

    @field_validator("shard", mode="before")
    @classmethod
    def _shard(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_shard(v)
        if v is not None and not isinstance(v, Shard):
            raise ValueError("must be I/N, e.g. 2/3")
        return v

    @property
    def status_port(self) -> int:
        """Where this daemon's endpoint listens: `status.port`, plus I - 1 for shard I/N with
        `status.shard_offset` (0 stays 0: any free port). Shards 1/3, 2/3 and 3/3 of one config:
        9120, 9121, 9122."""
        port, shard = self.status.port, self.shard
        if port and shard is not None and self.status.shard_offset:
            return port + shard.index - 1
        return port

    @property
    def enabled_cameras(self) -> tuple[CameraConfig, ...]:
        """The cameras this daemon polls: enabled, and owned by its shard if it has one."""
        return tuple(c for c in self.cameras
                     if c.enabled and (self.shard is None or self.shard.owns(c.id)))


class ConfigError(Exception):
    """An invalid configuration file: `errors` holds one printable line per problem."""

    def __init__(self, errors: list[str]) -> None:
        errors = [_one_line(e) for e in errors]
        super().__init__("\n".join(errors))
        self.errors = errors


# --- loading -------------------------------------------------------------------------------

_Path = tuple[str | int, ...]


class _Shape(Exception):
    """A document shape lyoncam refuses before building it: `line` and `problem`."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


_ANCHORS = "anchors and aliases are not supported; use `defaults:` to share settings"


def _base_loader() -> type[Any]:
    """PyYAML's safe loader with libyaml's parser under PyYAML's own composer: the composer
    is what refuses anchors and counts values below (`_Loader.compose_node`), and libyaml
    makes a 20,000-camera file load in 2.5 s instead of 8 s. PyPI's wheels bundle libyaml;
    a PyYAML built without it falls back to pure Python."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return yaml.SafeLoader

    class CSafeLoader(Composer, CParser, SafeConstructor, Resolver):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    return CSafeLoader


class _Loader(_base_loader()):  # type: ignore[misc]
    """PyYAML's safe loader, bounded: anchors and aliases are refused where they appear
    (aliases make the document a graph, which is how "billion laughs" files exhaust memory,
    and `defaults:` already shares settings), and so is a file of more than
    MAX_CONFIG_NODES values, before they are all built."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Shape(line, _ANCHORS)
        self._nodes += 1
        if self._nodes > MAX_CONFIG_NODES:
            raise _Shape(line, f"more than {MAX_CONFIG_NODES} values in one file")
        node: yaml.Node | None = super().compose_node(parent, index)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # An explicit tag on a value that does not fit it (`!!int abc`, `!!timestamp x`,
        # `!!bool maybe`) makes PyYAML raise ValueError or worse, not a YAMLError with a line.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, LookupError, OverflowError):
            raise _Shape(node.start_mark.line + 1,
                         f"{shown(node.value)} is not a valid {node.tag.rsplit(':', 1)[-1]}"
                         ) from None


def _line_map(node: yaml.Node) -> dict[_Path, int]:
    """Map each key path of the document to the 1-based line it starts on.

    Refuses duplicate keys, which YAML would resolve silently to the last one.
    """
    lines: dict[_Path, int] = {}
    stack: list[tuple[yaml.Node, _Path]] = [(node, ())]
    while stack:  # iterative: a deeply nested file must not overflow the Python stack
        current, path = stack.pop()
        lines.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                if key in keys:
                    raise _Shape(key_node.start_mark.line + 1, f"duplicate key {shown(key)}")
                keys.add(key)
                lines[(*path, key)] = key_node.start_mark.line + 1
                stack.append((value_node, (*path, key)))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                lines[(*path, i)] = item.start_mark.line + 1
                stack.append((item, (*path, i)))
    return lines


def _line_for(lines: Mapping[_Path, int], loc: _Path) -> int | None:
    """The line of the deepest part of `loc` present in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _one_line(text: str) -> str:
    """Every problem is one printed line: a key or a YAML message may hold a line break."""
    return text if text.isprintable() else repr(text)[1:-1]


def _field(loc: _Path) -> str:
    return ".".join(str(p) if isinstance(p, int) else shown(p, 60).strip("'\"") for p in loc
                    if not str(p).startswith("function-"))


def _message(source: str, data: Mapping[str, Any], lines: Mapping[_Path, int], loc: _Path,
             msg: str) -> str:
    line = _line_for(lines, loc)
    where = f"{source}:{line}" if line else source
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    cams = data.get("cameras")
    if len(loc) >= 2 and loc[0] == "cameras" and isinstance(loc[1], int) \
            and isinstance(cams, list):
        cam = cams[loc[1]] if loc[1] < len(cams) else None
        cam_id = cam.get("id") if isinstance(cam, Mapping) else None
        who = f"camera {shown(cam_id, 70)}" if cam_id else f"camera #{loc[1] + 1}"
        field = _field(loc[2:])
        return f"{where}: {who}: {field}: {msg}" if field else f"{where}: {who}: {msg}"
    field = _field(loc)
    return f"{where}: {field}: {msg}" if field else f"{where}: {msg}"


_FRIENDLY = {
    "extra_forbidden": "unknown key",
    "missing": "required but missing",
    "tuple_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "path_type": "must be a path",
}


def _friendly(error: ErrorDetails) -> str:
    """pydantic's message in our words; a value that is not of the field's type is named."""
    msg = _FRIENDLY.get(error["type"], error["msg"])
    if error["type"].endswith(("_parsing", "_type", "_from_float")) and error["type"] not in \
            _FRIENDLY:
        msg += f", not {shown(error['input'])}"
    return msg


def _from_defaults(data: Mapping[str, Any], loc: _Path) -> bool:
    """True when a camera error is about a key the camera inherited from `defaults:`."""
    if len(loc) < 3 or loc[0] != "cameras" or not isinstance(loc[1], int):
        return False
    cams = data.get("cameras")
    if not isinstance(cams, list):
        return False
    cam = cams[loc[1]] if loc[1] < len(cams) else None
    defaults = data.get("defaults")
    return (
        isinstance(cam, Mapping)
        and loc[2] not in cam
        and isinstance(defaults, Mapping)
        and loc[2] in defaults
    )


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    def rel(p: Path) -> Path:  # `~` is already expanded (_usable_path)
        return p if p.is_absolute() else base_dir / p

    cams = tuple(
        c.model_copy(update={"mask": rel(c.mask)}) if c.mask is not None else c
        for c in config.cameras
    )
    dedup = config.dedup.model_copy(
        update={"placeholder_images": tuple(rel(p) for p in config.dedup.placeholder_images)}
    )
    creds = config.storage.credentials_file
    storage = config.storage.model_copy(
        update={"credentials_file": rel(creds) if creds is not None else None})
    return config.model_copy(
        update={"data_dir": rel(config.data_dir), "cameras": cams, "dedup": dedup,
                "storage": storage}
    )


def parse_config(
    text: str,
    source: str = "cameras.yaml",
    base_dir: Path | None = None,
    context: Mapping[str, Any] | None = None,
) -> Config:
    """Validate YAML text. `context` may lower limits for tests (`{"min_interval": 0.05}`)."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            lines = _line_map(node) if node is not None else {}
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _Shape as exc:
        raise ConfigError([f"{source}:{exc.line}: invalid YAML: {exc.problem}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid YAML: nested too deeply"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([f"{source}{line}: invalid YAML: {problem}"]) from None
    except yaml.reader.ReaderError as exc:  # a control character or a bad byte: no mark
        at = text.count("\n", 0, exc.position) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "byte"
        raise ConfigError([f"{source}:{at}: invalid YAML: unacceptable character {char}: "
                           f"{exc.reason}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    if not isinstance(data, dict) or node is None:
        raise ConfigError([f"{source}: must be a mapping with at least a `cameras:` list"])

    found: list[tuple[_Path, str]] = [
        (loc, msg) for loc, msg in _duplicate_ids(data.get("cameras"))
    ]
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=dict(context or {}))
    except ValidationError as exc:
        found += [
            (tuple(e["loc"]), _friendly(e))
            for e in exc.errors()
            if not _from_defaults(data, tuple(e["loc"]))
        ]
    if config is not None:
        config = _resolve_paths(config, base_dir if base_dir is not None else Path.cwd())
        found += _missing_files(config)
    if found:
        ordered = sorted(
            ((_line_for(lines, loc) or 0, i), _message(source, data, lines, loc, msg))
            for i, (loc, msg) in enumerate(found)
        )
        raise ConfigError(list(dict.fromkeys(msg for _, msg in ordered)))
    assert config is not None
    return config


def _duplicate_ids(cameras: object) -> list[tuple[_Path, str]]:
    """Checked on the raw list, so a duplicate is reported with every other error."""
    if not isinstance(cameras, list):
        return []
    seen: dict[str, int] = {}
    found: list[tuple[_Path, str]] = []
    for i, cam in enumerate(cameras):
        cam_id = cam.get("id") if isinstance(cam, Mapping) else None
        if not isinstance(cam_id, str):
            continue
        if cam_id in seen:
            found.append((("cameras", i, "id"),
                          f"duplicate id, first used by camera #{seen[cam_id] + 1}"))
        seen.setdefault(cam_id, i)
    return found


def _missing_files(config: Config) -> list[tuple[_Path, str]]:
    """Mask and placeholder images that are not there (whether they decode is the
    dedup stage's check, which `check` also runs)."""
    found: list[tuple[_Path, str]] = []
    for i, cam in enumerate(config.cameras):
        if cam.mask is not None and (problem := _file_problem(cam.mask)):
            found.append((("cameras", i, "mask"), problem))
    for i, path in enumerate(config.dedup.placeholder_images):
        if problem := _file_problem(path):
            found.append((("dedup", "placeholder_images", i), problem))
    return found


def _file_problem(path: Path) -> str | None:
    try:
        return None if path.is_file() else f"no such file: {path}"
    except OSError as exc:  # e.g. a name too long: is_file() does not swallow that one
        return f"cannot use {path}: {exc.strerror or exc}"


def data_dir_problem(data_dir: Path) -> str | None:
    """Why `run` could not store frames in `data_dir`, or None.

    `check` and `run` both ask this before anything else (capture/commands.py), so a file
    that passes `check` also starts. It does what `run` does first, without keeping
    anything: creates a folder where `run` would create its own (in data_dir, or in the
    nearest folder above it that exists) and removes it again. Permission bits cannot tell:
    root passes every test of them, and /proc or /sys look writable to root but refuse
    folders.
    """
    existing = data_dir
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            what = "is" if existing == data_dir else f"would be inside {existing}, which is"
            return f"data_dir {data_dir} {what} not a folder"
        probe = tempfile.mkdtemp(prefix=".lyoncam-check-", dir=existing)
        os.rmdir(probe)
    except OSError as exc:
        where = "" if existing == data_dir else f" (in {existing})"
        return f"data_dir {data_dir}: cannot create folders there{where}: {exc.strerror or exc}"
    return None


def _read_bounded(path: Path) -> str:
    """The file's text, refused without reading it whole when over MAX_CONFIG_BYTES
    (also a FIFO or /dev/zero, which have no size to look at first)."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: {size} bytes is over the {MAX_CONFIG_BYTES}-byte "
                               "limit for a config file"])
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: more than {MAX_CONFIG_BYTES} bytes is over the "
                           f"{MAX_CONFIG_BYTES}-byte limit for a config file"])
    return data.decode("utf-8")


def load_config(path: Path, context: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    try:
        text = _read_bounded(path)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read: {reason}"]) from None
    return parse_config(text, str(path), path.resolve().parent, context)
