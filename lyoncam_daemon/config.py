"""The `cameras.yaml` schema: validated, frozen, every default visible here.

Like Frigate's camera config, unknown keys are errors: a typo such as `intervall: 30`
must not silently fall back to the default for months. Errors name the file, the line,
the camera and the field, one line each, so `check` and `run` can print them as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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

from lyoncam_daemon import __version__
from lyoncam_daemon.shard import Shard, parse_shard

#: Sub-10 s polling only re-downloads the same bytes (CriTer republishes once a minute) and
#: the platform asks clients not to poll faster than the data set changes.
MIN_INTERVAL_S = 10.0

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30,
    None: 1,
}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"2m"``, ``"500ms"``."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a duration such as '90s' or '2m'")
    seconds: float | None = None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds is None or not math.isfinite(seconds):
        # NaN or infinity would pass every `<` check and then kill the camera's schedule.
        raise ValueError("must be a number of seconds or a duration such as '90s' or '2m'")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as ``"8MB"`` or ``"512 KiB"``."""
    if isinstance(value, bool):
        raise ValueError("must be a number of bytes or a size such as '8MB'")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = float(m.group(1)) * _SIZE_UNITS[unit]
        if math.isfinite(size):
            return int(size)
    raise ValueError("must be a number of bytes or a size such as '8MB'")


def _no_nul(path: Path) -> Path:
    if "\0" in str(path):
        raise ValueError("must not contain a NUL byte")
    return path


Duration = Annotated[float, BeforeValidator(parse_duration)]
FilePath = Annotated[Path, AfterValidator(_no_nul)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
#: A rectangle in full-frame pixels: x, y, width, height.
Rect = tuple[int, int, int, int]


def _at_least_floor(v: float, info: ValidationInfo) -> float:
    floor = (info.context or {}).get("min_interval", MIN_INTERVAL_S)
    if v < floor:
        raise ValueError(f"must be at least {floor:g} s")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Model):
    """How lyoncam talks to the camera server."""

    user_agent: str = f"lyoncam/{__version__} (+https://github.com/lyoncam/lyoncam)"
    #: Requests in flight across all cameras.
    max_concurrent: int = Field(8, ge=1)
    #: All CriTer cameras share one host, which "is not sized for heavy load".
    max_per_host: int = Field(4, ge=1)
    #: A body over this is an error, not a memory spike (CriTer frames are 280-610 KB).
    max_frame_bytes: ByteSize = Field(8_000_000, ge=1024)
    connect_timeout: Duration = Field(10.0, gt=0)


class RetrySettings(_Model):
    """Per-camera backoff after a failed poll; other cameras are never affected."""

    #: Retries are polls too: all three delays keep the 10 s polling floor.
    backoff_initial: Duration = 15.0
    backoff_max: Duration = 300.0
    #: Failing continuously this long marks the camera `down` ...
    down_after: Duration = Field(900.0, gt=0)
    #: ... and a down camera is only probed this often.
    down_probe_interval: Duration = 600.0

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
    #: The S3 server's URL (SeaweedFS, MinIO, Garage...); unset means AWS itself.
    endpoint: str | None = None
    bucket: str | None = None
    #: Keys are `<prefix>/<camera>/<YYYY>/<MM>/<DD>/<camera>_<UTC>.jpg`, as in the tree.
    prefix: str = ""
    region: str = "us-east-1"
    credentials_file: FilePath | None = None
    #: Frames kept on local disk (data_dir/.lyoncam/spool) while the bucket is unreachable,
    #: uploaded in order when it is back; beyond this, frames are refused and counted.
    spool_max_bytes: ByteSize = Field(2_000_000_000, ge=0)
    #: Seconds for one upload before the frame goes to the spool instead.
    timeout: Duration = Field(20.0, gt=0)

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
    #: auto: JSON lines when stderr is not a terminal, readable console otherwise.
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: Seconds between one-line capture summaries.
    summary_interval: Duration = Field(300.0, gt=0)


class DedupSettings(_Model):
    """The perceptual fingerprint shared by all cameras (see frames.py / dedup.py)."""

    hash: Literal["phash", "dhash", "ahash", "whash"] = "phash"
    #: 64 → a 4096-bit phash. Measured on frames built from a real CriTer frame (bench/dedup.py):
    #: re-encodes, noise and flicker stay within 56 bits, a car-sized change starts at 78
    #: (124 in the benchmark's own labelled set);
    #: a 16x16 phash overlaps (copies up to 4 bits, some new scenes at 0).
    hash_size: int = Field(64, ge=4, le=64)
    #: Threads decoding and hashing frames off the event loop.
    workers: int = Field(2, ge=1, le=64)
    #: Frames with more pixels than this are refused before decoding (decompression bombs).
    max_pixels: int = Field(50_000_000, ge=1)
    #: Extra "camera unavailable" images matched perceptually (paths relative to this file).
    placeholder_images: tuple[FilePath, ...] = ()

    @model_validator(mode="after")
    def _whash_needs_power_of_two(self) -> DedupSettings:
        if self.hash == "whash" and self.hash_size & (self.hash_size - 1):
            raise ValueError("hash_size must be a power of 2 for whash")
        return self


class StatusSettings(_Model):
    """The HTTP endpoint of the daemon: `/metrics`, `/healthz` and the status page `/`."""

    enabled: bool = True
    #: Loopback by default: the page shows every camera's latest frame to whoever reaches it.
    host: str = "127.0.0.1"
    #: 0 picks a free port (logged at start); `run --status-port 0` turns the endpoint off.
    port: int = Field(9120, ge=0, le=65535)


class RetentionSettings(_Model):
    """What the daemon deletes so the disk never fills: oldest whole days first."""

    #: Frames older than this many days are deleted (none when unset).
    max_age_days: float | None = Field(None, gt=0)
    #: Frames beyond this many bytes in all are deleted, oldest first (no limit when unset).
    max_bytes: ByteSize | None = Field(None, ge=1)
    #: Below this much free space on the data disk, storing pauses until space returns.
    min_free_bytes: ByteSize = Field(1_000_000_000, ge=0)
    #: Seconds between retention passes (the first runs at start).
    interval: Duration = Field(3600.0, gt=0)


class Tuning(_Model):
    """Settings each camera may override; `defaults:` sets them for all cameras."""

    #: Seconds between polls, on a fixed-rate schedule.
    interval: Duration = 60.0
    #: Seconds for one whole request, body included.
    timeout: Duration = Field(20.0, gt=0)
    #: Hamming distance at or below which a frame is a near-duplicate of the last stored one.
    #: 64 of 4096 bits sits between the worst copy (56) and the weakest new scene (78), erring
    #: towards keeping: an occasional duplicate is cheaper than a lost vehicle.
    threshold: int = Field(64, ge=0)
    #: `drop` truncated JPEGs (no end-of-image marker), or `keep` them flagged in the sidecar.
    truncated: Literal["drop", "keep"] = "drop"
    #: Report the camera `stale` when its frame has not changed for this many intervals.
    stale_after: float = Field(10.0, gt=0)
    #: Rectangles [x, y, w, h] (full-frame pixels) the near-duplicate stage ignores:
    #: the timestamp overlay, sky, trees.
    ignore: tuple[Rect, ...] = ()
    #: Mask image (white = compared, black = ignored), relative to this file.
    mask: FilePath | None = None

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, v: float, info: ValidationInfo) -> float:
        return _at_least_floor(v, info)

    @field_validator("ignore")
    @classmethod
    def _rects(cls, v: tuple[Rect, ...]) -> tuple[Rect, ...]:
        for x, y, w, h in v:
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError("each rectangle is [x, y, width, height] with width, height > 0")
        return v


class CameraConfig(Tuning):
    """One camera. Fields left out take the value under `defaults:`."""

    #: Becomes a folder name, hence the strict pattern.
    id: str
    url: str
    name: str = ""
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CAMERA_ID_RE.fullmatch(v):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ -")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return v


class Config(_Model):
    """The whole file."""

    #: Relative paths are taken from the folder holding this file.
    data_dir: FilePath = Path("./data")
    #: Seconds to let in-flight fetches and writes finish on SIGTERM before cancelling.
    shutdown_grace: Duration = Field(10.0, ge=0)
    http: HttpSettings = HttpSettings()
    storage: StorageSettings = StorageSettings()
    retry: RetrySettings = RetrySettings()
    log: LogSettings = LogSettings()
    dedup: DedupSettings = DedupSettings()
    status: StatusSettings = StatusSettings()
    retention: RetentionSettings = RetentionSettings()
    #: Extra placeholder SHA-256s; the known CriTer "Image indisponible" one is built in.
    placeholder_sha256: tuple[str, ...] = ()
    defaults: Tuning = Tuning()
    cameras: tuple[CameraConfig, ...]
    #: `I/N`: poll only the enabled cameras that shard I of N owns (shard.py), so N daemons
    #: with the same file cover every camera once. `run --shard` overrides it.
    shard: Shard | None = None

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
    def enabled_cameras(self) -> tuple[CameraConfig, ...]:
        """The cameras this daemon polls: enabled, and owned by its shard if it has one."""
        return tuple(c for c in self.cameras
                     if c.enabled and (self.shard is None or self.shard.owns(c.id)))


class ConfigError(Exception):
    """An invalid configuration file: `errors` holds one printable line per problem."""

    def __init__(self, errors: list[str]) -> None:
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


def _line_map(node: yaml.Node) -> dict[_Path, int]:
    """Map each key path of the document to the 1-based line it starts on.

    Refuses aliases (`*name`): they make the document a graph, which is how "billion
    laughs" files exhaust memory, and `defaults:` already shares settings. Refuses
    duplicate keys, which YAML would resolve silently to the last one.
    """
    lines: dict[_Path, int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, _Path]] = [(node, ())]
    while stack:  # iterative: a deeply nested file must not overflow the Python stack
        current, path = stack.pop()
        if id(current) in seen:
            raise _Shape(current.start_mark.line + 1,
                         "anchors and aliases are not supported; use `defaults:` to share "
                         "settings")
        seen.add(id(current))
        lines.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                if key in keys:
                    raise _Shape(key_node.start_mark.line + 1, f"duplicate key {key!r}")
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
        who = f"camera {cam_id!r}" if cam_id else f"camera #{loc[1] + 1}"
        field = ".".join(str(p) for p in loc[2:] if not str(p).startswith("function-"))
        return f"{where}: {who}: {field}: {msg}" if field else f"{where}: {who}: {msg}"
    field = ".".join(str(p) for p in loc)
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
    def rel(p: Path) -> Path:
        p = p.expanduser()
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
        loader = yaml.SafeLoader(text)
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
            (tuple(e["loc"]), _FRIENDLY.get(e["type"], e["msg"]))
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
        if cam.mask is not None and not cam.mask.is_file():
            found.append((("cameras", i, "mask"), f"no such file: {cam.mask}"))
    for i, path in enumerate(config.dedup.placeholder_images):
        if not path.is_file():
            found.append((("dedup", "placeholder_images", i), f"no such file: {path}"))
    return found


def load_config(path: Path, context: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read: {reason}"]) from None
    return parse_config(text, str(path), path.resolve().parent, context)
