"""`discover`: build or update `cameras.yaml` from the Grand Lyon CriTer catalogue.

The catalogue comes as WFS GeoJSON (a FeatureCollection, geometry `[lon, lat]`) or as the JSON
table (`{fields, values}`, rows with `lat`/`lon`); both carry `numeromaintenance` (the id and
the JPEG's name), `nom` (direction), `libellelong` (site) and `url`.

The user's file is edited, not rewritten: it is read with ruamel.yaml's round-trip loader, so
comments, key order and the user's own settings survive. A listed camera gets the catalogue's
facts (url, name, lat, lon) and keeps everything else; a new camera is appended; a camera that
left the catalogue is disabled with a note (never deleted), and re-enabled if it comes back.
The result is validated like `check` before it replaces the file, atomically.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from lyoncam_daemon.config import CAMERA_ID_RE, ConfigError, parse_config
from lyoncam_daemon.storage.atomic import write_atomic

#: Marks the note on `enabled: false` of a camera discover disabled (so it may re-enable it).
NOTE_MARK = "lyoncam discover"
HEADER = (
    "Grand Lyon CriTer cameras (catalogue: pvo_patrimoine_voirie.pvocameracriter, Licence\n"
    "Ouverte 2.0), written by `lyoncam discover`. Edit freely: a re-run keeps your settings and\n"
    "comments, updates url/name/lat/lon from the catalogue and disables (never deletes) a\n"
    "camera that left it. `python -m lyoncam_daemon check --config FILE` validates this file.\n"
)
#: The catalogue is a few hundred KB; anything much larger is not it.
MAX_SOURCE_BYTES = 20_000_000


class DiscoverError(Exception):
    """One printable line naming the source or file and what is wrong."""


@dataclass(frozen=True)
class CatalogueCamera:
    id: str
    url: str
    name: str
    lat: float | None
    lon: float | None


@dataclass
class Report:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    reenabled: list[str] = field(default_factory=list)
    unchanged: int = 0

    def line(self, path: Path) -> str:
        return (f"{path}: {len(self.added)} added, {len(self.updated)} updated, "
                f"{len(self.disabled)} disabled (not in the catalogue), "
                f"{len(self.reenabled)} re-enabled, {self.unchanged} unchanged")


# -- the catalogue --------------------------------------------------------------------------


def parse_catalogue(data: object, source: str) -> tuple[list[CatalogueCamera], list[str]]:
    """Cameras of a GeoJSON FeatureCollection or a JSON table, and a warning per bad row."""
    rows: list[tuple[Mapping[str, Any], float | None, float | None]] = []
    if isinstance(data, Mapping) and isinstance(data.get("features"), list):
        for feature in data["features"]:
            props = feature.get("properties") if isinstance(feature, Mapping) else None
            geometry = feature.get("geometry") if isinstance(feature, Mapping) else None
            coords = geometry.get("coordinates") if isinstance(geometry, Mapping) else None
            lon, lat = (coords[0], coords[1]) if isinstance(coords, list) and len(coords) >= 2 \
                else (None, None)
            rows.append((props if isinstance(props, Mapping) else {}, _num(lat), _num(lon)))
    elif isinstance(data, Mapping) and isinstance(data.get("values"), list):
        fields = data.get("fields")
        for value in data["values"]:
            row = value
            if isinstance(value, list) and isinstance(fields, list):
                row = dict(zip((str(f) for f in fields), value, strict=False))
            row = row if isinstance(row, Mapping) else {}
            rows.append((row, _num(row.get("lat")), _num(row.get("lon"))))
    else:
        raise DiscoverError(f"{source}: not a CriTer catalogue (neither a GeoJSON "
                            "FeatureCollection nor a {fields, values} table)")
    cameras: list[CatalogueCamera] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for n, (row, lat, lon) in enumerate(rows, 1):
        cam_id = str(row.get("numeromaintenance") or "").strip()
        url = str(row.get("url") or "").strip()
        if not CAMERA_ID_RE.fullmatch(cam_id):
            warnings.append(f"{source}: row {n}: numeromaintenance {cam_id!r} is not a usable "
                            "camera id; skipped")
            continue
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            warnings.append(f"{source}: camera {cam_id}: url {url!r} is not http(s); skipped")
            continue
        if cam_id in seen:
            warnings.append(f"{source}: camera {cam_id} listed twice; the first is kept")
            continue
        seen.add(cam_id)
        cameras.append(CatalogueCamera(cam_id, url, _name(row), lat, lon))
    return cameras, warnings


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return round(number, 8) if math.isfinite(number) else None


def _name(row: Mapping[str, Any]) -> str:
    """`<site> - direction <direction>`, as the shipped cameras.yaml names them. The direction
    is `observation` ("Direction : ...", the fuller text) or else `nom`."""
    site = str(row.get("libellelong") or "").strip()
    observation = str(row.get("observation") or "").strip()
    direction = observation.split(":", 1)[1].strip() if ":" in observation else ""
    direction = direction or str(row.get("nom") or "").strip()
    if site and direction:
        return f"{site} - direction {direction}"
    return site or direction


def within(cameras: Sequence[CatalogueCamera], lat: float, lon: float, km: float
           ) -> list[CatalogueCamera]:
    """Cameras at most `km` from (lat, lon), great-circle distance; unplaced ones excluded."""
    return [c for c in cameras
            if c.lat is not None and c.lon is not None and _km(lat, lon, c.lat, c.lon) <= km]


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def shown(source: str) -> str:
    """A source as messages name it: a URL without its query (tokens stay out of logs)."""
    if source.startswith(("http://", "https://")):
        return urlsplit(source)._replace(query="", fragment="").geturl()
    return source


def read_source(source: str, timeout_s: float) -> object:
    """The catalogue's JSON from a URL or a file; DiscoverError naming it on any failure."""
    if source.startswith(("http://", "https://")):
        body = asyncio.run(_download(source, timeout_s))
    else:
        try:
            body = Path(source).read_bytes()
        except OSError as exc:
            raise DiscoverError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise DiscoverError(f"{shown(source)}: not JSON (is this the catalogue?)") from None


async def _download(url: str, timeout_s: float) -> bytes:
    name = shown(url)
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            if resp.status != 200:
                raise DiscoverError(f"{name}: HTTP {resp.status} {resp.reason or ''}".rstrip())
            body = await resp.content.read(MAX_SOURCE_BYTES + 1)
    except TimeoutError:
        raise DiscoverError(f"{name}: no answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise DiscoverError(f"{name}: {exc.__class__.__name__}: {exc}") from None
    if len(body) > MAX_SOURCE_BYTES:
        raise DiscoverError(f"{name}: over {MAX_SOURCE_BYTES} bytes; not the catalogue")
    return body


# -- the user's file ------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold a long url
    # `mask: null` stays `null`, not an empty value that reads as a typo
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def load_document(path: Path) -> CommentedMap:
    """The user's file as a round-trip document, or a new one with a header comment."""
    if not path.exists():
        doc = CommentedMap()
        doc["cameras"] = CommentedSeq()
        doc.yaml_set_start_comment(HEADER)
        return doc
    try:
        doc = _yaml().load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoverError(f"{path}: cannot read: {exc}") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DiscoverError(f"{where}: invalid YAML: {problem}") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise DiscoverError(f"{path}: must be a mapping with a `cameras:` list")
    if doc.get("cameras") is None:
        doc["cameras"] = CommentedSeq()
    if not isinstance(doc["cameras"], CommentedSeq):
        raise DiscoverError(f"{path}: `cameras:` must be a list")
    return doc


def merge(doc: CommentedMap, catalogue: Sequence[CatalogueCamera],
          wanted: Sequence[CatalogueCamera], today: str) -> Report:
    """Update `doc` in place. `catalogue` is the whole catalogue (what vanished is judged
    against it), `wanted` the cameras to add when missing (the catalogue, or `--near`'s)."""
    report = Report()
    by_id = {c.id: c for c in catalogue}
    hosts = {urlsplit(c.url).netloc for c in catalogue}
    cameras: CommentedSeq = doc["cameras"]
    listed: set[str] = set()
    for entry in cameras:
        if not isinstance(entry, CommentedMap) or not isinstance(entry.get("id"), str):
            continue  # `check` names it; discover does not guess
        cam_id = entry["id"]
        listed.add(cam_id)
        if cam_id in by_id:
            changed = _refresh(entry, by_id[cam_id])
            if _ours_disabled(entry):
                entry["enabled"] = True
                entry.ca.items.pop("enabled", None)  # the note no longer holds
                report.reenabled.append(cam_id)
            elif changed:
                report.updated.append(cam_id)
            else:
                report.unchanged += 1
        elif urlsplit(str(entry.get("url", ""))).netloc in hosts and entry.get("enabled", True):
            # Only cameras served where the catalogue's are: the user's other cameras stay.
            entry["enabled"] = False
            entry.yaml_add_eol_comment(f"# not in the catalogue on {today} ({NOTE_MARK})",
                                       "enabled")
            report.disabled.append(cam_id)
        else:
            report.unchanged += 1
    for cam in sorted(wanted, key=lambda c: c.id):
        if cam.id not in listed:
            cameras.append(_entry(cam))
            report.added.append(cam.id)
    return report


def _entry(cam: CatalogueCamera) -> CommentedMap:
    entry = CommentedMap()
    entry["id"] = cam.id
    _refresh(entry, cam)
    entry["enabled"] = True
    return entry


def _refresh(entry: CommentedMap, cam: CatalogueCamera) -> bool:
    """Set the catalogue's facts; True if any changed. Other keys are the user's."""
    changed = False
    for key, value in (("url", cam.url), ("name", cam.name), ("lat", cam.lat),
                       ("lon", cam.lon)):
        if value is None or entry.get(key) == value:
            continue
        entry[key] = value
        changed = True
    return changed


def _ours_disabled(entry: CommentedMap) -> bool:
    if entry.get("enabled") is not False:
        return False
    comment = entry.ca.items.get("enabled")
    token = comment[2] if comment and len(comment) > 2 else None
    return token is not None and NOTE_MARK in str(getattr(token, "value", ""))


def dump(doc: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


# -- the command ----------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """0 written (or already up to date), 1 the source failed, 2 the file cannot be used."""
    try:
        data = read_source(args.source, args.timeout)
        catalogue, warnings = parse_catalogue(data, shown(args.source))
    except DiscoverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not catalogue:
        print(f"error: {shown(args.source)}: no usable camera in the catalogue", file=sys.stderr)
        return 1
    wanted = within(catalogue, *args.near) if args.near else catalogue
    output: Path = args.output
    try:
        doc = load_document(output)
    except DiscoverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = merge(doc, catalogue, wanted, datetime.now(UTC).date().isoformat())
    text = dump(doc)
    try:  # what `check` would say, before the user's file is replaced
        parse_config(text, str(output), output.resolve().parent)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {output}: left as it was", file=sys.stderr)
        return 2
    try:
        write_atomic(output, text.encode("utf-8"))
    except OSError as exc:
        print(f"error: {output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(report.line(output))
    return 0
