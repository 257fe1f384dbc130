"""`discover`: the catalogue fixture and local stand-in servers → a cameras.yaml `check` accepts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from lyoncam_daemon.cli import main
from tests.conftest import FIXTURES

CATALOGUE = FIXTURES / "pvocameracriter.geojson"
ALL_IDS = {f["properties"]["numeromaintenance"]
           for f in json.loads(CATALOGUE.read_text())["features"]}


def cameras_of(path: Path) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in yaml.safe_load(path.read_text())["cameras"]}


def discover(*args: str) -> int:
    return main(["discover", *args])


def check(path: Path) -> int:
    return main(["check", "--config", str(path)])


def test_a_new_file_from_the_geojson_fixture_passes_check(tmp_path: Path) -> None:
    out = tmp_path / "cameras.yaml"
    assert discover("--source", str(CATALOGUE), "--output", str(out)) == 0
    cams = cameras_of(out)
    assert set(cams) == ALL_IDS and len(cams) == 15
    cwl9018 = cams["CWL9018"]
    assert cwl9018["name"] == "Pont Clemenceau - direction Tunnel de la Croix Rousse"
    assert (cwl9018["lat"], cwl9018["lon"]) == (45.7748934, 4.80811826)
    assert cwl9018["url"].endswith("/pvo_patrimoine_voirie.pvocameracriter/CWL9018.JPG")
    assert out.read_text().startswith("# Grand Lyon CriTer cameras")
    assert check(out) == 0


def test_near_adds_only_cameras_within_the_radius(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cameras.yaml"
    assert discover("--source", str(CATALOGUE), "--output", str(out),
                    "--near", "45.76,4.84,3") == 0
    assert set(cameras_of(out)) == {"CWL3005", "CWL5801", "CWL6165", "CWL9018", "CWL9801"}
    assert "5 added" in capsys.readouterr().out
    assert check(out) == 0


USER_FILE = """\
# my cameras, tuned by hand
data_dir: ./frames   # on the big disk

defaults:
  interval: 90

cameras:
  # the bridge: slower, it barely changes
  - id: CWL9018
    url: http://old.example/CWL9018.JPG
    name: "my own name"
    interval: 120     # do not touch
    threshold: 80
  - id: CWL5801
    url: https://download.data.grandlyon.com/files/rdata/pvo_patrimoine_voirie.pvocameracriter/CWL5801.JPG
    enabled: false    # truncated JPEGs, off on purpose
  - id: CWGONE1
    url: https://download.data.grandlyon.com/files/rdata/pvo_patrimoine_voirie.pvocameracriter/CWGONE1.JPG
    name: a camera the catalogue dropped
  - id: MY_OWN
    url: http://192.168.1.20/snapshot.jpg
"""


def test_an_existing_file_keeps_comments_settings_and_disables_what_vanished(
    tmp_path: Path,
) -> None:
    out = tmp_path / "cameras.yaml"
    out.write_text(USER_FILE)
    assert discover("--source", str(CATALOGUE), "--output", str(out),
                    "--near", "45.7749,4.8081,0.1") == 0
    text = out.read_text()
    for comment in ("# my cameras, tuned by hand", "# on the big disk",
                    "# the bridge: slower, it barely changes", "# do not touch",
                    "# truncated JPEGs, off on purpose"):
        assert comment in text, comment
    cams = cameras_of(out)
    # the catalogue's facts are refreshed, the user's settings kept
    assert cams["CWL9018"]["interval"] == 120 and cams["CWL9018"]["threshold"] == 80
    assert cams["CWL9018"]["url"].startswith("https://download.data.grandlyon.com/")
    assert cams["CWL9018"]["lat"] == 45.7748934
    assert cams["CWL5801"]["enabled"] is False  # the user's choice stays
    # gone from the catalogue: disabled with a note, not deleted
    assert cams["CWGONE1"]["enabled"] is False
    assert cams["CWGONE1"]["name"] == "a camera the catalogue dropped"
    assert "(lyoncam discover)" in text.split("id: CWGONE1")[1].split("- id:")[0]
    # the user's own camera elsewhere is none of the catalogue's business
    assert cams["MY_OWN"] == {"id": "MY_OWN", "url": "http://192.168.1.20/snapshot.jpg"}
    assert list(cams) == ["CWL9018", "CWL5801", "CWGONE1", "MY_OWN"]  # --near: none new
    assert check(out) == 0

    # a second run changes nothing
    before = out.read_text()
    assert discover("--source", str(CATALOGUE), "--output", str(out),
                    "--near", "45.7749,4.8081,0.1") == 0
    assert out.read_text() == before


def test_a_camera_back_in_the_catalogue_is_enabled_again(tmp_path: Path) -> None:
    out = tmp_path / "cameras.yaml"
    out.write_text(USER_FILE)
    assert discover("--source", str(CATALOGUE), "--output", str(out), "--near", "0,0,1") == 0
    assert cameras_of(out)["CWGONE1"]["enabled"] is False
    data = json.loads(CATALOGUE.read_text())
    back = json.loads(json.dumps(data["features"][0]))
    back["properties"]["numeromaintenance"] = "CWGONE1"
    back["properties"]["url"] = back["properties"]["url"].replace("CWL9018", "CWGONE1")
    data["features"].append(back)
    source = tmp_path / "catalogue.geojson"
    source.write_text(json.dumps(data))
    assert discover("--source", str(source), "--output", str(out), "--near", "0,0,1") == 0
    assert cameras_of(out)["CWGONE1"]["enabled"] is True
    assert "lyoncam discover" not in out.read_text()
    assert cameras_of(out)["CWL5801"]["enabled"] is False  # the user's own off switch
    assert check(out) == 0


# -- from a server --------------------------------------------------------------------------


Route = Callable[[web.Request], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Route], Any]]:
    """Start a stand-in catalogue server on loopback answering with `handler`."""
    runners: list[web.AppRunner] = []

    async def start(handler: Route) -> str:
        app = web.Application()
        app.router.add_get("/catalogue", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/catalogue"

    yield start
    for runner in runners:
        await runner.cleanup()


async def run_discover(*args: str) -> int:
    """The command starts its own event loop: run it beside the test's, in a thread."""
    return await asyncio.to_thread(discover, *args)


def json_table() -> dict[str, Any]:
    """The fixture's cameras as the JSON table serves them: {fields, values} with lat/lon."""
    values = []
    for f in json.loads(CATALOGUE.read_text())["features"]:
        lon, lat = f["geometry"]["coordinates"]
        values.append({**f["properties"], "lat": lat, "lon": lon})
    return {"fields": list(values[0]), "values": values}


async def test_the_json_table_from_a_server(tmp_path: Path, serve: Any) -> None:
    table = json_table()
    table["values"].append({"numeromaintenance": "../../etc", "url": "http://x/y.JPG"})
    table["values"].append({"numeromaintenance": "CWFTP", "url": "ftp://x/CWFTP.JPG"})

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(table)

    url = await serve(handler)
    out = tmp_path / "cameras.yaml"
    assert await run_discover("--source", url + "?maxfeatures=-1", "--output", str(out)) == 0
    cams = cameras_of(out)
    assert set(cams) == ALL_IDS
    assert cams["CWL9018"]["lat"] == 45.7748934
    assert check(out) == 0


async def test_the_geojson_from_a_server_as_rows_of_lists(tmp_path: Path, serve: Any) -> None:
    table = json_table()
    fields = table["fields"]
    rows = [[row.get(k) for k in fields] for row in table["values"]]

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"fields": fields, "values": rows})

    out = tmp_path / "cameras.yaml"
    assert await run_discover("--source", await serve(handler), "--output", str(out)) == 0
    assert set(cameras_of(out)) == ALL_IDS


@pytest.mark.parametrize("kind", ["http500", "html", "not_catalogue", "slow", "refused"])
async def test_a_failing_source_is_one_line_and_leaves_the_file_alone(
    tmp_path: Path, serve: Any, capsys: pytest.CaptureFixture[str], kind: str,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if kind == "http500":
            return web.Response(status=500, text="oops")
        if kind == "html":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if kind == "slow":
            await asyncio.sleep(5)
        return web.json_response({"type": "nothing"})

    url = await serve(handler)
    if kind == "refused":
        url = url.replace(url.split(":")[2].split("/")[0], "9")  # the discard port: closed
    out = tmp_path / "cameras.yaml"
    out.write_text(USER_FILE)
    code = await run_discover("--source", url + "?token=s3cret", "--output", str(out),
                              "--timeout", "1")
    err = capsys.readouterr().err
    assert code == 1
    assert out.read_text() == USER_FILE
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: http://127.0.0.1:"), err
    assert "s3cret" not in err
    expected = {"http500": "HTTP 500", "html": "not JSON", "not_catalogue":
                "not a CriTer catalogue", "slow": "no answer within 1 s",
                "refused": "ClientConnectorError"}[kind]
    assert expected in err


def test_an_invalid_existing_file_is_named_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cameras.yaml"
    out.write_text("cameras:\n  - id: A\n  url: [\n")
    assert discover("--source", str(CATALOGUE), "--output", str(out)) == 2
    assert capsys.readouterr().err.startswith(f"error: {out}:")
    assert out.read_text() == "cameras:\n  - id: A\n  url: [\n"


def test_a_bad_near_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        discover("--source", str(CATALOGUE), "--near", "45.7,4.8")
    assert exit_.value.code == 2
    assert "'45.7,4.8' is not LAT,LON,KM" in capsys.readouterr().err


def test_a_missing_source_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert discover("--source", str(tmp_path / "nope.json"),
                    "--output", str(tmp_path / "c.yaml")) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope.json'}: cannot read: No such file or directory\n")
    assert not (tmp_path / "c.yaml").exists()


def test_the_shipped_cameras_yaml_comes_back_byte_for_byte(tmp_path: Path) -> None:
    """Every comment and setting of a real, heavily commented file survives a run."""
    shipped = (Path(__file__).parents[2] / "cameras.yaml").read_text()
    out = tmp_path / "cameras.yaml"
    out.write_text(shipped)
    assert discover("--source", str(CATALOGUE), "--output", str(out)) == 0
    assert out.read_text() == shipped
