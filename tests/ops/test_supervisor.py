"""The supervisor: port choice, and restarting any component that dies, with backoff, one output line per event.

Restarts are driven by `watch_once` with a hand-moved clock, so no test waits for a backoff delay; the components
are real child processes (a Python one-liner), so exit codes and signals are the operating system's own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.ports import choose_port, port_is_free
from ops.supervisor import SANDBOX_GROUPS, SANDBOX_RESTART_NOTE, Supervised, Supervisor, describe_exit
from shared.settings import load_settings


def test_a_taken_port_is_replaced_by_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port, replaced = choose_port(busy)
    assert replaced and port != busy and port_is_free(port)


def test_a_free_preferred_port_is_kept():
    port, replaced = choose_port(0)
    free, replaced_again = choose_port(port)
    assert (free, replaced_again) == (port, False) and not replaced


# ---------------------------------------------------------------------------- restarts
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Launcher:
    """Starts `python -c CODE` and remembers every process it started."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", self.code], start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def supervisor(tmp_path: Path) -> tuple[Supervisor, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    sup = Supervisor(load_settings(_env_file=None), var_dir=tmp_path / "var", echo=lines.append, clock=clock)
    return sup, lines, clock


def _spawner(argv: list[str]) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: subprocess.Popen(argv)


def _adopt(sup: Supervisor, component: Supervised) -> Supervised:
    sup._adopt(component)
    return component


def _wait_exited(proc: subprocess.Popen[bytes] | None) -> None:
    assert proc is not None
    proc.wait(timeout=30)


SLEEPER = "import time; time.sleep(120)"


def test_a_component_that_exits_is_announced_and_restarted_after_the_backoff_delay(supervisor):
    sup, lines, clock = supervisor
    launcher = Launcher("import sys; sys.exit(3)")
    try:
        component = _adopt(sup, Supervised("poller", launcher))
        _wait_exited(component.proc)

        sup.watch_once()
        assert lines == ["poller exited with code 3; restarting in 0.5s"]
        clock.now += 0.4
        sup.watch_once()
        assert len(launcher.procs) == 1, "not restarted before its delay"

        clock.now += 0.1
        sup.watch_once()
        assert len(launcher.procs) == 2
        assert lines[1] == f"poller restarted (pid {launcher.procs[1].pid})"

        _wait_exited(component.proc)  # dies again at once: the next delay doubles
        sup.watch_once()
        assert lines[2] == "poller exited with code 3; restarting in 1.0s"
    finally:
        launcher.kill_all()


def test_a_component_killed_by_a_signal_is_reported_with_the_signal_and_comes_back(supervisor):
    sup, lines, clock = supervisor
    launcher = Launcher(SLEEPER)
    try:
        component = _adopt(sup, Supervised("redis", launcher))
        sup.watch_once()
        assert lines == [], "a running component is left alone"
        os.kill(launcher.procs[0].pid, signal.SIGKILL)
        _wait_exited(component.proc)

        sup.watch_once()
        clock.now += 0.5
        sup.watch_once()

        assert lines == ["redis exited with code -9 (SIGKILL); restarting in 0.5s",
                         f"redis restarted (pid {launcher.procs[1].pid})"]
        assert launcher.procs[1].poll() is None, "the new process runs"
    finally:
        launcher.kill_all()


def test_every_kind_of_component_is_restarted_the_sandbox_saying_that_it_reseeds(supervisor):
    sup, lines, clock = supervisor
    launchers = {name: Launcher("import sys; sys.exit(1)") for name in ("redis", "sandbox", "worker-revocation")}
    try:
        for name, launcher in launchers.items():
            note = SANDBOX_RESTART_NOTE if name == "sandbox" else ""
            _wait_exited(_adopt(sup, Supervised(name, launcher, restart_note=note)).proc)
        sup.watch_once()
        clock.now += 0.5
        sup.watch_once()
        for name, launcher in launchers.items():
            assert len(launcher.procs) == 2, name
        assert f"sandbox restarted (pid {launchers['sandbox'].procs[1].pid}){SANDBOX_RESTART_NOTE}" in lines
        assert "reseeds" in SANDBOX_RESTART_NOTE
    finally:
        for launcher in launchers.values():
            launcher.kill_all()


def test_a_restart_that_fails_to_start_is_retried_with_a_longer_delay(supervisor):
    sup, lines, clock = supervisor
    launcher = Launcher("import sys; sys.exit(1)")
    attempts = []

    def flaky() -> subprocess.Popen[bytes]:
        attempts.append(clock.now)
        if len(attempts) == 2:
            raise RuntimeError("redis-server exited at start: port in use")
        return launcher()

    try:
        component = _adopt(sup, Supervised("redis", flaky))
        _wait_exited(component.proc)
        sup.watch_once()
        clock.now += 0.5
        sup.watch_once()
        assert lines[-1] == "redis did not start (redis-server exited at start: port in use); restarting in 1.0s"
        clock.now += 1.0
        sup.watch_once()
        assert lines[-1] == f"redis restarted (pid {launcher.procs[-1].pid})"
        assert len(attempts) == 3
    finally:
        launcher.kill_all()


def test_a_component_that_ran_a_long_time_is_restarted_with_the_shortest_delay(supervisor):
    sup, lines, clock = supervisor
    launcher = Launcher(SLEEPER)
    try:
        component = _adopt(sup, Supervised("beat", launcher))
        component.backoff.quick_deaths = 5  # an earlier crash loop
        clock.now += 3600
        launcher.procs[0].kill()
        _wait_exited(component.proc)
        sup.watch_once()
        assert lines == ["beat exited with code -9 (SIGKILL); restarting in 0.5s"]
    finally:
        launcher.kill_all()


def test_nothing_is_restarted_once_stopping(supervisor):
    sup, lines, clock = supervisor
    launcher = Launcher(SLEEPER)
    component = _adopt(sup, Supervised("webhook", launcher))
    sup.stop()
    assert component.proc is not None and component.proc.poll() is not None
    clock.now += 100
    sup.watch_once()
    assert lines == [] and len(launcher.procs) == 1


def test_exit_codes_name_the_signal():
    assert describe_exit(0) == "0"
    assert describe_exit(2) == "2"
    assert describe_exit(-signal.SIGTERM) == "-15 (SIGTERM)"


def test_stop_ends_components_in_order_producers_before_workers_before_redis(supervisor, tmp_path):
    sup, _, _ = supervisor
    order_file = tmp_path / "order"
    code = (f"import signal, sys, time\n"
            f"def bye(*_):\n"
            f"    open({str(order_file)!r}, 'a').write(sys.argv[1] + '\\n'); sys.exit(0)\n"
            f"signal.signal(signal.SIGTERM, bye)\n"
            f"open({str(order_file)!r} + '.ready', 'a').write('x')\n"
            f"time.sleep(120)\n")
    names = ["redis", "worker-revocation", "poller"]
    for name in names:
        _adopt(sup, Supervised(name, _spawner([sys.executable, "-c", code, name])))
    deadline = time.monotonic() + 30
    while len((tmp_path / "order.ready").read_text() if (tmp_path / "order.ready").exists() else "") < 3:
        assert time.monotonic() < deadline, "components did not start"
        time.sleep(0.05)
    sup.stop()
    stopped = order_file.read_text().split()
    assert stopped[-1] == "redis"
    assert set(stopped) == set(names)


def test_the_request_poller_is_supervised_only_when_the_mapping_enables_requests(tmp_path: Path):
    def supervisor_with(mapping_text: str) -> tuple[Supervisor, list[str]]:
        path = tmp_path / f"m{abs(hash(mapping_text))}.yaml"
        path.write_text(mapping_text)
        lines: list[str] = []
        return Supervisor(load_settings(_env_file=None, mapping_file=path), var_dir=tmp_path / "var",
                          echo=lines.append), lines

    on, _ = supervisor_with("requests: {enabled: true, poll_interval_s: 7}\n")
    assert on._requests_enabled() is True
    assert on.urls["requests"] == "polling Salesforce every 7 s for approved requests"
    off, _ = supervisor_with("requests: {enabled: false}\n")
    assert off._requests_enabled() is False and "requests" not in off.urls
    broken, lines = supervisor_with("requests: {enabeld: true}\n")
    assert broken._requests_enabled() is False
    assert lines and lines[0].startswith("request poller off: the mapping does not load")


def _entra_groups_named(node: object) -> set[str]:
    """Every Entra group display name a mapping names: `group:` in rules, `groups:` lists, `allowed_groups:`."""
    if isinstance(node, list):
        return set().union(*(_entra_groups_named(item) for item in node))
    if not isinstance(node, dict):
        return set()
    named: set[str] = set()
    for key, value in node.items():
        if key == "group" and isinstance(value, str):
            named.add(value)
        elif key in ("groups", "allowed_groups") and isinstance(value, list):
            named.update(v for v in value if isinstance(v, str))
        else:
            named |= _entra_groups_named(value)
    return named


def test_make_run_seeds_every_entra_group_the_demo_mapping_names():
    import yaml

    from sandbox.graph.seed import GROUP_NAMES

    named = _entra_groups_named(yaml.safe_load((Path(__file__).parents[2] / "examples" / "mapping.yaml").read_text()))
    assert {"All Employees", "Marketing", "Distributors"} <= named  # the walk finds scope, rules and guest rules
    assert named <= set(GROUP_NAMES[:SANDBOX_GROUPS])
