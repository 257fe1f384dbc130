"""The Docker image for real: built from the Dockerfile, run against the simulator on
loopback with only cameras.yaml mounted (see tests/_docker.py for the set-up)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._docker import (
    config_yaml,
    docker,
    free_ports,
    json_lines,
    lyoncam_image,
    simulator,
    wait_for,
)


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"lyoncam-test-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", name)
    yield name
    docker("volume", "rm", "-f", name, check=False)


@pytest.mark.timeout(900)
def test_image_captures_as_non_root_reloads_turns_healthy_and_stops_cleanly(
    tmp_path: Path, volume: str,
) -> None:
    image = lyoncam_image()
    name = f"lyoncam-test-{uuid.uuid4().hex[:8]}"
    with simulator(tmp_path, cameras=3) as urls:
        port = free_ports()  # not 9120: the container shares the host's network
        (tmp_path / "cameras.yaml").write_text(config_yaml(urls[:2], status_port=port))
        docker("run", "-d", "--name", name, "--network", "host",
               "--health-interval", "1s", "--health-start-period", "2s",
               "-v", f"{tmp_path / 'cameras.yaml'}:/config/cameras.yaml:ro",
               "-v", f"{volume}:/data", image)  # no command: the image's own CMD
        try:
            def frames() -> list[str]:
                found = docker("exec", name, "find", "/data", "-name", "*.jpg",
                               "-printf", "%u %U %p\n", check=False).stdout
                return found.splitlines()

            # both cameras stored a frame (phases spread them over one 10 s interval)
            wait_for("a frame of each camera",
                     lambda: {line.split("/")[2] for line in frames()} >= {"SIM001", "SIM002"},
                     60)
            owners = {tuple(line.split()[:2]) for line in frames()}
            assert owners == {("lyoncam", "10001")}  # the image's non-root user, not root

            # reload: rewritten in place (a bind-mounted file keeps its inode), then SIGHUP
            (tmp_path / "cameras.yaml").write_text(config_yaml(urls, status_port=port))
            docker("kill", "-s", "HUP", name)
            wait_for("a frame of the added camera",
                     lambda: any("/SIM003/" in line for line in frames()), 60)

            def health() -> str:
                return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()

            wait_for("a healthy health check", lambda: health() == "healthy", 60)
            stop = docker("stop", name, timeout=60)
            assert stop.returncode == 0
            state = docker("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
            assert state.stdout.split() == ["0", "false"]
            logs = docker("logs", name)
            assert logs.stdout == ""  # everything on stderr ...
            lines = json_lines(logs.stderr)  # ... as JSON lines
            assert lines[0]["event"] == "started" and lines[-1]["event"] == "stopped"
            [reloaded] = [line for line in lines if line["event"] == "reloaded"]
            assert reloaded["added"] == ["SIM003"] and reloaded["untouched"] == 2
        finally:
            docker("rm", "-f", name, check=False)


@pytest.mark.timeout(900)
def test_health_check_fails_when_the_heartbeat_is_stale(tmp_path: Path, volume: str) -> None:
    """The image's HEALTHCHECK command judges the heartbeat, not merely the process."""
    image = lyoncam_image()
    record = '{"heartbeat_unix": 1000.0, "heartbeat_every_s": 2, "stopping": false}'
    script = f"mkdir -p /data/.lyoncam && echo '{record}' > /data/.lyoncam/health.json"
    docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", image, "-c", script)
    health = docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}", image).stdout
    kind, *command = json.loads(health)
    assert kind == "CMD"
    result = docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", command[0],
                    image, *command[1:], check=False)
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: heartbeat")
