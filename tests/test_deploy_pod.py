"""The StatefulSet's pod under the private Docker daemon: the lyoncam image run the way the
rendered deploy/kubernetes manifest runs it (its args, its environment with POD_NAME as the
downward API sets it, its user, a read-only root filesystem, no capabilities, the camera
list mounted read-only, /data on a volume, /tmp on a tmpfs) captures exactly the simulated
cameras its shard owns, and answers /healthz where the probes ask.

A cluster cannot run here; everything a pod gets is read from the rendered objects, so a
change to the manifest changes what runs (see tests/_docker.py for the set-up)."""

from __future__ import annotations

import json
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lyoncam_daemon.config.shard import owner
from tests._docker import docker, json_lines, lyoncam_image, simulator, wait_for
from tests.test_deploy_kubernetes import KUSTOMIZE_DIR, container, one, render, set_shard_count
from tests.test_deploy_prometheus_server import free_port

SHARDS = 3
CAMERAS = 9


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"lyoncam-pod-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", name)
    yield name
    docker("volume", "rm", "-f", name, check=False)


def rendered(tmp_path: Path) -> list[dict[str, Any]]:
    directory = tmp_path / "kubernetes"
    shutil.copytree(KUSTOMIZE_DIR, directory)
    set_shard_count(directory, SHARDS)
    return render(directory)


def pod_options(objs: list[dict[str, Any]], pod_name: str, config_dir: Path,
                volume: str) -> list[str]:
    """`docker run` options for what the StatefulSet gives its container."""
    pod = one(objs, "StatefulSet")["spec"]["template"]["spec"]
    c = container(objs)
    options = ["--network", "host",  # the simulator listens on loopback
               "--user", f"{pod['securityContext']['runAsUser']}:"
                         f"{pod['securityContext']['runAsGroup']}"]
    security = c["securityContext"]
    if security["readOnlyRootFilesystem"]:
        options.append("--read-only")
    options += [f"--cap-drop={cap}" for cap in security["capabilities"]["drop"]]
    if not security["allowPrivilegeEscalation"]:
        options += ["--security-opt", "no-new-privileges"]
    for env in c["env"]:
        if "value" in env:
            options += ["-e", f"{env['name']}={env['value']}"]
        else:  # the downward API: the only field the manifest reads is the pod's name
            assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, env
            options += ["-e", f"{env['name']}={pod_name}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in c["volumeMounts"]:
        source = volumes.get(mount["name"])
        if source is not None and "configMap" in source:
            options += ["-v", f"{config_dir}:{mount['mountPath']}:ro"]
        elif source is not None and "emptyDir" in source:
            options += ["--tmpfs", mount["mountPath"]]  # world-writable, like an emptyDir
        else:  # the volume claim template
            assert mount["name"] in {t["metadata"]["name"] for t in
                                     one(objs, "StatefulSet")["spec"]["volumeClaimTemplates"]}
            options += ["-v", f"{volume}:{mount['mountPath']}"]
    return options


def config_for(objs: list[dict[str, Any]], urls: list[str], status_port: int) -> str:
    """The ConfigMap's cameras.yaml with the simulated cameras (and the 10 s floor) in
    place of its own, and a free port: containers on the host network share the host's."""
    config = yaml.safe_load(one(objs, "ConfigMap")["data"]["cameras.yaml"])
    config["status"]["port"] = status_port
    config["defaults"] = {"interval": 10, "timeout": 5}
    config["shutdown_grace"] = 5
    config["cameras"] = [{"id": f"SIM{i:03d}", "url": url} for i, url in enumerate(urls, 1)]
    return yaml.safe_dump(config, sort_keys=False)


@pytest.mark.timeout(900)
def test_a_pod_of_the_statefulset_captures_exactly_its_shard(
    tmp_path: Path, volume: str,
) -> None:
    image = lyoncam_image()
    objs = rendered(tmp_path)
    pod_name, shard = "lyoncam-1", 2  # the second pod is shard 2 of 3
    name = f"lyoncam-pod-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with simulator(tmp_path, cameras=CAMERAS) as urls:
        ids = [f"SIM{i:03d}" for i in range(1, CAMERAS + 1)]
        mine = {c for c in ids if owner(c, SHARDS) == shard}
        assert 0 < len(mine) < CAMERAS  # a shard that proves something
        config_dir = tmp_path / "config"
        config_dir.mkdir()
        (config_dir / "cameras.yaml").write_text(config_for(objs, urls, port))
        c = container(objs)
        docker("run", "-d", "--name", name,
               *pod_options(objs, pod_name, config_dir, volume), image, *c["args"])
        try:
            def stored() -> dict[str, int]:
                found = docker("exec", name, "find", "/data", "-name", "*.jpg",
                               check=False).stdout.split()
                counts: dict[str, int] = {}
                for path in found:
                    camera = path.split("/")[2]
                    counts[camera] = counts.get(camera, 0) + 1
                return counts

            # Two frames of each of its cameras: a whole 10 s interval has passed, in which
            # any camera wrongly kept would have stored one too.
            wait_for("two frames of each camera of the shard",
                     lambda: all(stored().get(cam, 0) >= 2 for cam in mine), 90)
            assert set(stored()) == mine

            path = c["livenessProbe"]["httpGet"]["path"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                assert resp.status == 200
            assert docker("stop", name, timeout=60).returncode == 0
            assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
            lines = json_lines(docker("logs", name).stderr)
            started = lines[0]
            assert started["event"] == "started"
            assert started["shard"] == f"{shard}/{SHARDS}" and started["cameras"] == len(mine)
        finally:
            docker("rm", "-f", name, check=False)


@pytest.mark.timeout(600)
def test_a_pod_past_the_shard_count_stops_at_start_in_one_line(tmp_path: Path) -> None:
    """lyoncam-3 of a StatefulSet whose LYONCAM_SHARDS says 3 (a scaled-up set with a
    stale count): exit 2 and one line saying why, before anything is polled."""
    image = lyoncam_image()
    objs = rendered(tmp_path)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "cameras.yaml").write_text(
        config_for(objs, ["http://127.0.0.1:9/a.jpg"], free_port()))
    volume = f"lyoncam-pod-{uuid.uuid4().hex[:8]}"
    try:
        result = docker("run", "--rm", *pod_options(objs, "lyoncam-3", config_dir, volume),
                        image, *container(objs)["args"], check=False)
    finally:
        docker("volume", "rm", "-f", volume, check=False)
    assert result.returncode == 2
    assert result.stderr == ("error: shard auto: POD_NAME='lyoncam-3' is pod 3, but "
                             "LYONCAM_SHARDS=3 makes pods 0 to 2\n")
    assert result.stdout == ""
    assert json.dumps(result.stderr).count("\\n") == 1
