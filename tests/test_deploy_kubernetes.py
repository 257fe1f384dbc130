"""deploy/kubernetes/ checked offline by the real tools: `kubectl kustomize` renders it (the
kustomize inside kubectl, no cluster), every core object passes the Kubernetes API schema
(kubernetes-validate, strict: an unknown or misspelt field fails), and the references no
schema sees hold: selectors pick the pods, ports exist by name, the ConfigMap's cameras.yaml
is a config lyoncam accepts and listens where the probes and the scrape look.

The image itself, run with a pod name and the environment the StatefulSet gives it, is in
test_docker.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lyoncam_daemon.config import parse_config
from lyoncam_daemon.config.shard import parse_shard

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
#: `replicas:` and `replacements:` in a kustomization need kustomize 4.5 (kubectl 1.24).
MIN_KUSTOMIZE = (4, 5)

Obj = dict[str, Any]


def kubectl() -> str:
    """kubectl with a kustomize new enough, or fail the test saying what to install."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not found: install kubectl >= 1.24 (it renders deploy/kubernetes "
                    "offline; Debian's kubernetes-client 1.20 is too old)", pytrace=False)
    out = subprocess.run([path, "version", "--client"], capture_output=True, text=True,
                         check=False, timeout=60).stdout
    found = re.search(r"Kustomize Version: v(\d+)\.(\d+)", out)
    if found is None or (int(found[1]), int(found[2])) < MIN_KUSTOMIZE:
        pytest.fail(f"{path} has no kustomize >= 4.5 ({out.strip()!r}): install kubectl "
                    ">= 1.24", pytrace=False)
    return path


def render(directory: Path) -> list[Obj]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "deprecated" not in result.stderr.lower(), result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def copy_of_deploy(tmp_path: Path) -> Path:
    target = tmp_path / "kubernetes"
    shutil.copytree(KUSTOMIZE_DIR, target)
    return target


def with_s3(directory: Path) -> Path:
    """The kustomization with the S3 component switched on, as its comment says to."""
    path = directory / "kustomization.yaml"
    text = path.read_text()
    enabled = text.replace("# components:\n#   - components/s3", "components:\n  - components/s3")
    assert enabled != text, "the S3 component's commented lines moved"
    path.write_text(enabled)
    return directory


def one(objs: list[Obj], kind: str) -> Obj:
    [obj] = [o for o in objs if o["kind"] == kind]
    return obj


def container(objs: list[Obj]) -> Obj:
    [c] = one(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def env_value(objs: list[Obj], name: str) -> Any:
    [value] = [e.get("value") for e in container(objs)["env"] if e["name"] == name]
    return value


def selects(selector: Obj, labels: Obj) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def validate(objs: list[Obj]) -> None:
    """Every object against the newest API schema kubernetes-validate bundles, strictly;
    the Prometheus Operator's PodMonitor is a custom resource it has no schema for."""
    version = kubernetes_validate.latest_version()
    for obj in objs:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            assert obj["kind"] == "PodMonitor"
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {exc}") from None


@pytest.mark.parametrize("s3", [False, True], ids=["volume-claim", "s3"])
def test_the_kustomization_renders_objects_the_kubernetes_api_schemas_accept(
    tmp_path: Path, s3: bool,
) -> None:
    directory = with_s3(copy_of_deploy(tmp_path)) if s3 else KUSTOMIZE_DIR
    objs = render(directory)
    assert sorted(o["kind"] for o in objs) == [
        "ConfigMap", "PodDisruptionBudget", "PodMonitor", "Service", "StatefulSet"]
    validate(objs)
    env_from = container(objs).get("envFrom", [])
    if s3:  # credentials from the Secret the operator creates, never from the repository
        assert env_from == [{"secretRef": {"name": "lyoncam-s3"}}]
        assert not any(o["kind"] == "Secret" for o in objs)
    else:
        assert env_from == []


def test_schema_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: strict validation refuses a field the API does not know."""
    objs = render(KUSTOMIZE_DIR)
    container(objs)["securityContext"]["readOnlyRootFileSystem"] = True  # wrong case
    with pytest.raises(AssertionError, match="readOnlyRootFileSystem"):
        validate(objs)


@pytest.mark.parametrize("s3", [False, True], ids=["volume-claim", "s3"])
def test_the_config_map_holds_a_config_lyoncam_accepts_where_probes_and_scrapes_look(
    tmp_path: Path, s3: bool,
) -> None:
    directory = with_s3(copy_of_deploy(tmp_path)) if s3 else KUSTOMIZE_DIR
    objs = render(directory)
    config_map = one(objs, "ConfigMap")
    config = parse_config(config_map["data"]["cameras.yaml"])
    assert (config.storage.kind == "s3") is s3
    c = container(objs)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    # run's arguments name the mounted file and the data volume
    args = c["args"]
    assert args[args.index("--config") + 1] == mounts["config"] + "/cameras.yaml"
    assert args[args.index("--data-dir") + 1] == mounts["data"] == str(config.data_dir)
    assert args[args.index("--shard") + 1] == "auto"
    # the status endpoint listens beyond loopback, on the port probes and scrapes use
    assert config.status.enabled and config.status.host == "0.0.0.0"
    [port] = c["ports"]
    assert port["containerPort"] == config.status.port
    for shard in ("1/4", "4/4"):  # every pod on that port: no per-shard offset in a pod
        assert config.model_copy(update={"shard": parse_shard(shard)}).status_port == \
            port["containerPort"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # the volume mounts the generated ConfigMap (its name carries the content hash)
    volumes = one(objs, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    [config_volume] = [v for v in volumes if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["name"].startswith("lyoncam-config-")


def test_service_pod_monitor_and_budget_select_the_shards_and_name_real_ports() -> None:
    objs = render(KUSTOMIZE_DIR)
    sts = one(objs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in container(objs)["ports"]}
    assert selects(sts["spec"]["selector"], pod_labels)

    service = one(objs, "Service")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"  # every shard a target of its own
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names

    monitor = one(objs, "PodMonitor")
    assert selects(monitor["spec"]["selector"], pod_labels)
    assert "app.kubernetes.io/name" in monitor["spec"]["selector"]["matchLabels"]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "metrics" in port_names

    budget = one(objs, "PodDisruptionBudget")
    assert selects(budget["spec"]["selector"], pod_labels)
    assert budget["spec"]["maxUnavailable"] == 1


def test_the_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities() -> None:
    objs = render(KUSTOMIZE_DIR)
    pod = one(objs, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container(objs)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def set_shard_count(directory: Path, count: int) -> None:
    path = directory / "kustomization.yaml"
    text, n = re.subn(r"(replicas:\n  - name: lyoncam\n    count: )\d+", rf"\g<1>{count}",
                      path.read_text())
    assert n == 1, "the shard count's one place moved"
    path.write_text(text)


@pytest.mark.parametrize("count", [1, 5, 12])
def test_the_shard_count_set_in_one_place_reaches_replicas_and_every_pod(
    tmp_path: Path, count: int,
) -> None:
    directory = copy_of_deploy(tmp_path)
    set_shard_count(directory, count)
    objs = render(directory)
    assert one(objs, "StatefulSet")["spec"]["replicas"] == count
    assert env_value(objs, "LYONCAM_SHARDS") == str(count)
    # the pod's ordinal comes from its own name, which the StatefulSet makes lyoncam-K
    [pod_name] = [e for e in container(objs)["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_a_changed_camera_list_rolls_the_pods_and_an_unchanged_one_does_not(
    tmp_path: Path,
) -> None:
    """kustomize names the ConfigMap after a hash of its content and the pod template refers
    to that name: a new cameras.yaml changes the template, so the StatefulSet rolls its pods
    (what a Helm chart does with a checksum annotation)."""
    directory = copy_of_deploy(tmp_path)

    def template() -> Obj:
        spec = one(render(directory), "StatefulSet")["spec"]["template"]
        assert isinstance(spec, dict)
        return spec

    before = template()
    assert template() == before
    cameras = directory / "cameras.yaml"
    cameras.write_text(cameras.read_text().replace("Pont Clemenceau", "Pont Clémenceau"))
    assert template() != before
