"""The unit for real: systemd 252 as PID 1 in a container, lyoncam installed as docs/systemd.md
says (venv at /opt/lyoncam, systemd/lyoncam.service), polling the simulator on loopback.

The tests run in file order on one container: start, reload, watchdog, sandbox, stop. A
drop-in shortens WatchdogSec (and the restart delays) so the watchdog is tested in seconds.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lyoncam_daemon.config.shard import owner

from ._docker import ROOT, config_yaml, docker, free_ports, simulator, systemd_image, wait_for

WATCHDOG_S = 4
DROP_IN = f"""[Service]
WatchdogSec={WATCHDOG_S}s
RestartSec=1s
TimeoutAbortSec=2s
"""

pytestmark = pytest.mark.timeout(900)


@dataclass
class Host:
    container: str
    urls: list[str]
    #: lyoncam.service's status port; shard I of the template listens on it + I - 1.
    port: int

    def sh(self, script: str, stdin: str | None = None, check: bool = True) -> str:
        return docker("exec", "-i", self.container, "sh", "-c", script, stdin=stdin,
                      check=check).stdout

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh("systemctl show lyoncam " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines())

    def frames(self, camera: str) -> list[str]:
        return self.sh(f"find /var/lib/lyoncam/ -name '{camera}_*.jpg'").split()

    def write_config(self, cameras: int) -> None:
        self.sh("cat > /etc/lyoncam/cameras.yaml",
                stdin=config_yaml(self.urls[:cameras], status_port=self.port))

    def healthz(self, port: int) -> int:
        """The status code of /healthz on `port` (the container shares the host's network)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    context = tmp_path_factory.mktemp("systemd-image")
    shutil.copy(ROOT / "tests" / "systemd.Dockerfile", context / "Dockerfile")
    shutil.copy(ROOT / "systemd" / "lyoncam.service", context / "lyoncam.service")
    template = (ROOT / "systemd" / "lyoncam@.service").read_text()
    image = systemd_image(context)
    name = f"lyoncam-systemd-{uuid.uuid4().hex[:8]}"
    with simulator(tmp_path_factory.mktemp("sim"), cameras=3) as urls:
        # As the field notes measured: what systemd needs as PID 1 here (no --privileged).
        docker("run", "-d", "--name", name, "--network", "host", "--tmpfs", "/run",
               "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
               "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", image)
        try:
            h = Host(name, urls, free_ports(2))
            wait_for("systemd to boot", lambda: h.sh(
                "systemctl is-system-running --wait", check=False).strip()
                in ("running", "degraded"), 60)
            h.sh("mkdir -p /etc/lyoncam /etc/systemd/system/lyoncam.service.d"
                 " && cat > /etc/systemd/system/lyoncam.service.d/test.conf"
                 " && systemctl daemon-reload", stdin=DROP_IN)
            h.sh("cat > /etc/systemd/system/lyoncam@.service && systemctl daemon-reload",
                 stdin=template)
            h.write_config(cameras=1)
            yield h
        finally:
            docker("rm", "-f", name, check=False)


def test_start_reaches_active_and_captures(host: Host) -> None:
    host.sh("systemctl start lyoncam")  # Type=notify: returns once READY=1 arrived
    assert host.sh("systemctl is-active lyoncam").strip() == "active"
    assert host.show("StatusText")["StatusText"] == "capturing 1 cameras"
    wait_for("a frame of SIM001", lambda: host.frames("SIM001"), 30)
    owner = host.sh("stat -c %u /var/lib/private/lyoncam").strip()
    assert owner != "0"  # a dynamic user, not root


def test_reload_starts_an_added_camera_in_the_same_process(host: Host) -> None:
    """`systemctl reload` on a minimal Debian: no procps, hence no /bin/kill (ExecReload
    used it: 203/EXEC)."""
    assert host.sh("ls /bin/kill /usr/bin/kill 2>&1", check=False).count("No such file") == 2
    pid = host.show("MainPID")["MainPID"]
    host.write_config(cameras=2)
    host.sh("systemctl reload lyoncam")
    wait_for("a frame of SIM002", lambda: host.frames("SIM002"), 30)
    assert host.show("MainPID")["MainPID"] == pid
    assert host.show("StatusText")["StatusText"] == "capturing 2 cameras"
    journal = host.sh("journalctl -u lyoncam -o cat --no-pager")
    assert '"added": ["SIM002"]' in journal and '"event": "reloaded"' in journal


def test_the_watchdog_is_fed_past_watchdog_sec(host: Host) -> None:
    before = host.show("MainPID", "NRestarts", "WatchdogTimestampMonotonic")
    assert host.show("WatchdogUSec")["WatchdogUSec"] == f"{WATCHDOG_S}s"
    time.sleep(WATCHDOG_S * 2)  # systemd's own deadline, not a timing assertion of ours
    after = host.show("MainPID", "NRestarts", "WatchdogTimestampMonotonic", "ActiveState")
    assert after["ActiveState"] == "active"
    assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"])
    assert int(after["WatchdogTimestampMonotonic"]) > int(before["WatchdogTimestampMonotonic"])


def test_the_sandbox_rates_at_most_2(host: Host) -> None:
    report = host.sh("systemd-analyze security lyoncam.service --no-pager")
    found = re.search(r"Overall exposure level for lyoncam\.service: (\d+\.\d+)", report)
    assert found, report[-500:]
    assert float(found.group(1)) <= 2.0


def test_a_stalled_event_loop_is_restarted_by_the_watchdog(host: Host) -> None:
    before = host.show("MainPID", "NRestarts")
    host.sh(f"kill -STOP {before['MainPID']}")  # the loop stops: no more WATCHDOG=1

    def restarted() -> bool:
        now = host.show("MainPID", "NRestarts", "ActiveState")
        return now["NRestarts"] != before["NRestarts"] and now["ActiveState"] == "active"

    wait_for("a restart by the watchdog", restarted, 60)
    assert host.show("MainPID")["MainPID"] != before["MainPID"]
    journal = host.sh("journalctl -u lyoncam -o cat --no-pager")
    assert "Watchdog timeout" in journal


def test_stop_ends_with_result_success(host: Host) -> None:
    host.sh("systemctl stop lyoncam")
    state = host.show("ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    journal = host.sh("journalctl -u lyoncam -o cat --no-pager")
    assert '"event": "stopped"' in journal


def test_the_template_unit_runs_one_shard_per_instance(host: Host) -> None:
    """lyoncam@I-N.service polls only shard I of N's cameras, into its own state folder."""
    cameras = ("SIM001", "SIM002", "SIM003")
    expected = {c: owner(c, 2) for c in cameras}
    assert set(expected.values()) == {1, 2}  # both shards own a camera of these three
    host.write_config(cameras=3)
    started = host.sh("systemctl start lyoncam@1-2 lyoncam@2-2 2>&1; echo rc=$?", check=False)
    assert started.strip().endswith("rc=0"), host.sh(  # %I unescapes 1-2 to 1/2
        "journalctl -u lyoncam@1-2 -u lyoncam@2-2 -o cat --no-pager | tail -20", check=False)

    def holders() -> dict[str, list[int]]:
        return {c: [i for i in (1, 2) if host.sh(
            f"find /var/lib/private/lyoncam-shard-{i}-2/ -name '{c}_*.jpg'", check=False).split()]
            for c in cameras}

    try:
        for i in (1, 2):
            assert host.sh(f"systemctl is-active lyoncam@{i}-2").strip() == "active"
        wait_for("a frame of every camera", lambda: all(holders().values()), 60)
        # each shard keeps its endpoint: status.port + I - 1
        assert [host.healthz(host.port + i - 1) for i in (1, 2)] == [200, 200]
        assert holders() == {c: [expected[c]] for c in cameras}
        report = host.sh("systemd-analyze security lyoncam@1-2.service --no-pager")
        found = re.search(r"Overall exposure level for lyoncam@1-2\.service: (\d+\.\d+)",
                          report)
        assert found and float(found.group(1)) <= 2.0, report[-500:]
    finally:
        host.sh("systemctl stop lyoncam@1-2 lyoncam@2-2", check=False)
    for i in (1, 2):
        state = host.sh(f"systemctl show lyoncam@{i}-2 -p Result").strip()
        assert state == "Result=success"
