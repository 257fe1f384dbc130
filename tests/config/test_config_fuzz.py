"""Config fuzzing: generated malformed `cameras.yaml` files through the real `check` command.

Every one must exit 2 with only `error: FILE...` lines, one per problem (so at most one per
defect put in), and never a traceback. A valid base document is built first, then broken by
one to three mutations, each of which alone makes the file invalid: wrong types, values out
of range, unknown keys, bad durations and ids, duplicate keys and ids, anchors and aliases,
broken YAML syntax, binary junk, deep nesting, huge numbers, NaN and infinity, empty files.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from lyoncam_daemon.cli import main
from lyoncam_daemon.config import CameraConfig, Config

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

Doc = dict[str, Any]

# --- a valid document -------------------------------------------------------------------------

camera_id = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
valid_camera = st.fixed_dictionaries(
    {"id": camera_id, "url": st.sampled_from(["http://127.0.0.1:8090/a.jpg", "https://x.org/b"])},
    optional={
        # No quotes or line breaks: a text break inserted between two lines must not land
        # inside a quoted scalar spanning lines.
        "name": st.text(alphabet="abcdefé ÀZ019-.,/()", max_size=20),
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
        "interval": st.sampled_from([10, 60, "90s", "2m", 600.5]),
        "timeout": st.sampled_from([1, 20, "500ms"]),
        "threshold": st.integers(0, 4095),
        "truncated": st.sampled_from(["drop", "keep"]),
        "stale_after": st.floats(0.5, 100),
        "ignore": st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100),
                                     st.integers(1, 100), st.integers(1, 100)).map(list),
                           max_size=2),
    },
)


@st.composite
def valid_documents(draw: st.DrawFn) -> Doc:
    cams = draw(st.lists(valid_camera, min_size=1, max_size=4, unique_by=lambda c: c["id"]))
    cams[0]["enabled"] = True
    return {
        "data_dir": "./data",
        "shutdown_grace": draw(st.sampled_from([0, 10, "30s"])),
        "http": {"max_concurrent": draw(st.integers(1, 16)), "max_frame_bytes": "8MB"},
        "retry": {"backoff_initial": 15, "backoff_max": 300},
        "log": {"format": "json", "level": "info"},
        "dedup": {"hash": "phash", "hash_size": 64},
        "defaults": {"interval": 60, "timeout": 20},
        "cameras": cams,
    }


# --- values that are wrong for a field --------------------------------------------------------

not_a_number = st.one_of(
    st.text(alphabet="abcxyz !?", min_size=1, max_size=8),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=1),
)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
huge = st.integers(10**20, 10**400)
too_short = st.one_of(st.floats(-1e9, 9.99), st.integers(-10**30, 9),
                      st.sampled_from(["9s", "500ms", "0.1m"]))
bad_duration = st.one_of(not_a_number, non_finite, huge, st.just(True),
                         st.sampled_from(["10 parsecs", "1e400", "-5s", "8 days", "1e9"]))
bad_id = st.one_of(
    st.text(min_size=65, max_size=80, alphabet="ab"),
    st.text(min_size=1, max_size=10).filter(lambda s: not all(c.isascii() and (c.isalnum()
                                                                 or c in "_-") for c in s)),
    st.just(""), st.integers(), st.lists(st.integers(), max_size=1), st.none(),
)
bad_url = st.one_of(
    st.sampled_from(["ftp://x/a", "x/a", "http://", "http://x:99999/a", "http://x:0/",
                     "http://x:port/", "http://[::1/", "http://x/a b", "http://x/\n", ""]),
    st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2),
)

#: (where, field, wrong values): where is "camera", "defaults" or a top-level section.
FIELD_ERRORS: list[tuple[str, str, st.SearchStrategy[Any]]] = [
    ("camera", "interval", st.one_of(bad_duration, too_short)),
    ("camera", "timeout", st.one_of(bad_duration, st.sampled_from([0, -1, "0s"]))),
    ("camera", "threshold", st.one_of(st.integers(max_value=-1), st.integers(4096, 10**30),
                                      not_a_number, st.floats(0.1, 0.9), non_finite)),
    ("camera", "truncated", st.text(max_size=6).filter(lambda s: s not in ("drop", "keep"))),
    ("camera", "stale_after", st.one_of(st.floats(max_value=0), non_finite, not_a_number)),
    ("camera", "ignore", st.one_of(
        st.just([[0, 0, 0, 10]]), st.just([[1, 2, 3]]), st.just([[-1, 0, 5, 5]]),
        st.just([[0, 0, 10**20, 5]]), st.just("everything"), st.just([[0, 0, "w", 5]]))),
    ("camera", "mask", st.sampled_from(["missing.png", "no/such/dir/m.png", "a" * 300])),
    ("camera", "id", bad_id),
    ("camera", "url", bad_url),
    ("camera", "lat", st.one_of(st.floats(90.001, 1e308), st.floats(-1e308, -90.001),
                                st.just("north"), non_finite)),
    ("camera", "lon", st.one_of(st.floats(180.001, 1e308), st.just([4.8]))),
    ("camera", "enabled", st.sampled_from(["maybe", 2, [], {}, "enabled"])),
    ("camera", "name", st.one_of(st.integers(), st.lists(st.text(max_size=2), min_size=1))),
    ("defaults", "interval", st.one_of(bad_duration, too_short)),
    ("defaults", "threshold", st.one_of(st.integers(4096, 10**9), st.integers(max_value=-1))),
    ("defaults", "truncated", st.just("sometimes")),
    ("http", "max_concurrent", st.one_of(st.integers(max_value=0), not_a_number)),
    ("http", "max_frame_bytes", st.one_of(st.integers(max_value=1023), not_a_number,
                                          st.sampled_from(["8 MB per frame", "1e999MB", "-1"]))),
    ("http", "connect_timeout", st.one_of(bad_duration, st.just(0))),
    ("http", "user_agent", st.one_of(st.just("a\nb"), st.just("x\r\nX-Evil: 1"), st.integers())),
    ("retry", "backoff_initial", too_short),
    ("retry", "backoff_max", too_short),
    ("retry", "down_after", st.one_of(bad_duration, st.just(0))),
    ("log", "format", st.text(max_size=5).filter(lambda s: s not in ("auto", "json", "console"))),
    ("log", "level", st.sampled_from(["verbose", "INFO", 10])),
    ("log", "summary_interval", st.one_of(bad_duration, st.just(-1))),
    ("dedup", "hash", st.sampled_from(["md5", "PHASH", "", 1])),
    ("dedup", "hash_size", st.one_of(st.integers(max_value=3), st.integers(min_value=65),
                                     st.just("big"))),
    ("dedup", "workers", st.one_of(st.integers(max_value=0), st.integers(min_value=65))),
    ("dedup", "max_pixels", st.one_of(st.integers(max_value=0), not_a_number)),
    ("dedup", "placeholder_images", st.sampled_from([["gone.jpg"], "gone.jpg", [1]])),
    ("top", "placeholder_sha256", st.sampled_from([["abc"], ["A" * 64], "x", [None]])),
    ("top", "data_dir", st.sampled_from(["a\0b", "~no-such-user-lyoncam/x", "cameras.yaml",
                                         "cameras.yaml/sub", ["x"]])),
    ("top", "shutdown_grace", st.one_of(bad_duration, st.just(-1))),
]

Mutation = Callable[[Doc], None]


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for info in model.model_fields.values():
        for arg in (info.annotation, *get_args(info.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _field_names(arg)
    return names


#: Every key the schema knows, at any level: an "unknown key" mutation must not hit one.
KNOWN_KEYS = _field_names(Config) | _field_names(CameraConfig)


@st.composite
def field_mutation(draw: st.DrawFn) -> Mutation:
    where, key, values = draw(st.sampled_from(FIELD_ERRORS))
    value = draw(values)
    index = draw(st.integers(0, 3))

    def mutate(doc: Doc) -> None:
        cams = doc.get("cameras")
        if where == "camera":
            if isinstance(cams, list) and cams and isinstance(cams[index % len(cams)], dict):
                cams[index % len(cams)][key] = value
                return
        elif where == "top":
            doc[key] = value
            return
        elif isinstance(doc.get(where), dict):
            doc[where][key] = value
            if where == "defaults" and isinstance(cams, list):
                for cam in cams:  # a camera's own value would hide the default's
                    if isinstance(cam, dict):
                        cam.pop(key, None)
            return
        doc["cameras"] = "not applicable"  # an earlier mutation broke the shape: break it again
    return mutate


@st.composite
def shape_mutation(draw: st.DrawFn) -> Mutation:
    """Wrong shapes: unknown keys, missing required keys, non-mappings, no enabled camera."""
    kind = draw(st.sampled_from([
        "unknown_top", "unknown_section", "unknown_camera", "missing_id", "missing_url",
        "no_cameras", "cameras_not_list", "camera_not_mapping", "section_not_mapping",
        "duplicate_id", "none_enabled", "empty_cameras",
    ]))
    word = draw(st.text(min_size=1, max_size=12).filter(lambda s: s not in KNOWN_KEYS))
    junk = draw(st.one_of(st.integers(), st.text(max_size=5), st.none(),
                          st.lists(st.integers(), max_size=2)))
    section = draw(st.sampled_from(["http", "retry", "log", "dedup", "defaults"]))

    def mutate(doc: Doc) -> None:
        cams = doc.get("cameras")
        first = cams[0] if isinstance(cams, list) and cams and isinstance(cams[0], dict) else None
        if kind == "unknown_top":
            doc[word] = junk
        elif kind == "unknown_section" and isinstance(doc.get(section), dict):
            doc[section][word] = junk
        elif kind == "unknown_camera" and first is not None:
            first[word] = junk
        elif kind == "missing_id" and first is not None:
            first.pop("id", None)
        elif kind == "missing_url" and first is not None:
            first.pop("url", None)
        elif kind == "no_cameras":
            doc.pop("cameras", None)
        elif kind == "cameras_not_list":
            doc["cameras"] = junk if junk is not None and not isinstance(junk, list) else "none"
        elif kind == "camera_not_mapping" and isinstance(cams, list) and cams:
            cams[-1] = junk if junk is not None else "CAM1"
        elif kind == "section_not_mapping":
            doc[section] = junk if junk is not None else []
        elif kind == "duplicate_id" and first is not None and isinstance(first.get("id"), str) \
                and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", first["id"]):
            doc["cameras"].append({"id": first["id"], "url": "http://x/dup"})
        elif kind == "none_enabled" and isinstance(cams, list):
            for cam in cams:
                if isinstance(cam, dict):
                    cam["enabled"] = False
        elif kind == "empty_cameras":
            doc["cameras"] = []
        else:
            doc["cameras"] = "not applicable"  # the shape was already broken: break it again
    return mutate


def dump(doc: Doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# --- text-level breakage: what no dict can express ---------------------------------------------


@st.composite
def broken_text(draw: st.DrawFn, text: str) -> str:
    kind = draw(st.sampled_from([
        "duplicate_key", "anchor", "alias", "syntax", "binary", "control", "deep", "empty",
        "huge_number", "tag",
    ]))
    lines = text.splitlines()
    if kind == "duplicate_key":
        return text + "data_dir: ./again\n"  # every document has a data_dir
    if kind == "anchor":
        return text.replace("cameras:", "cameras: &cams", 1)
    if kind == "alias":  # the anchor alone is refused too, if there is no interval to alias
        return "shared: &s 60\n" + text.replace("  interval: 60", "  interval: *s", 1)
    if kind == "syntax":
        snippet = draw(st.sampled_from(["x: [1, 2", "x: {a: 1", "x: 'open", 'x: "open',
                                        "\tx: 1", "x: y: z", "]", "}", "? [a", "x: @at"]))
        at = draw(st.integers(0, len(lines)))
        return "\n".join([*lines[:at], snippet, *lines[at:]]) + "\n"
    if kind == "binary":  # bytes that are not UTF-8 (a lone surrogate becomes byte 0xff)
        junk = draw(st.binary(min_size=1, max_size=40))
        at = draw(st.integers(0, len(text)))
        return text[:at] + "\udcff" + junk.decode("latin-1") + text[at:]
    if kind == "control":
        char = draw(st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x7f", "\ufffe"]))
        at = draw(st.integers(0, len(text)))
        return text[:at] + char + text[at:]
    if kind == "deep":
        depth = draw(st.integers(50, 1500))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        return text + "x: " + opener * depth + "1" + closer * depth + "\n"
    if kind == "empty":
        return draw(st.sampled_from(["", "\n", "   \n", "# only a comment\n", "---\n", "~\n",
                                     "...\n", "null\n", "[]\n", "42\n", "'text'\n"]))
    if kind == "huge_number":
        digits = draw(st.integers(30, 5000))
        return text + "shutdown_grace: 1" + "0" * digits + "\n" if "shutdown_grace" not in \
            text else text.replace("shutdown_grace:", "shutdown_grace: 1" + "0" * digits + " #", 1)
    # tag: an explicit tag the value does not fit, or one only unsafe loaders know
    tagged = draw(st.sampled_from(["!!int abc", "!!float x", "!!timestamp 2026-13-45",
                                   "!!binary '***'", "!!python/object:os.system {}",
                                   "!custom 1", "!!set [a]", "!!omap 5", "!!bool maybe"]))
    return text + f"x: {tagged}\n"


@st.composite
def malformed_files(draw: st.DrawFn) -> tuple[bytes, int]:
    """The file's bytes and how many defects were put in."""
    doc = copy.deepcopy(draw(valid_documents()))
    # One file in five is broken as text only: the first YAML error hides every other defect.
    text_only = draw(st.integers(0, 4)) == 0
    mutations = [] if text_only else draw(
        st.lists(st.one_of(field_mutation(), shape_mutation()), min_size=1, max_size=3))
    for mutate in mutations:
        mutate(doc)
    text = dump(doc)
    defects = len(mutations)
    if text_only:
        text = draw(broken_text(text))
        defects = 1
    return text.encode("utf-8", "surrogateescape"), defects


def check_file(path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> tuple[int, str,
                                                                                     str]:
    path.write_bytes(data)
    try:
        code = main(["check", "--config", str(path)])
    except SystemExit as exc:  # argparse-style exits would also be a bug here
        code = exc.code if isinstance(exc.code, int) else -1
    out, err = capsys.readouterr()
    return code, out, err


@FUZZ
@given(malformed_files())
def test_every_malformed_file_is_exit_2_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[bytes, int],
) -> None:
    data, defects = case
    path = tmp_path / "cameras.yaml"
    code, out, err = check_file(path, data, capsys)
    shown = data[:400].decode("utf-8", "replace")
    assert code == 2, f"exit {code} for:\n{shown}\nstdout: {out}\nstderr: {err}"
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert 1 <= len(lines) <= defects, f"{lines} for:\n{shown}"
    for line in lines:
        assert line.startswith(f"error: {path}"), line
        # What was found, for --hypothesis-show-statistics: the message without file and line.
        event(re.sub(r"\d+", "N", line.removeprefix(f"error: {path}"))[:60])
    assert len(set(lines)) == len(lines)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid_documents())
def test_the_unbroken_documents_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: Doc,
) -> None:
    """Without this, a base document that is itself invalid would make the fuzzing vacuous."""
    code, out, err = check_file(tmp_path / "cameras.yaml", dump(doc).encode(), capsys)
    assert (code, err) == (0, "")
    assert "OK:" in out
