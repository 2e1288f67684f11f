"""``target: {kind: ssh}``: read with file:line errors; the runtime (process or podman;
another refused with its line)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from entrega.config import SshTargetConfig, load_config
from entrega.errors import ConfigError

FLEET = """\
app: shop
run:
  command: "python app.py"
environments:
  - name: staging
    target: {kind: local}
    router: {kind: embedded, listen: "127.0.0.1:8080"}
  - name: production
    target:
      kind: ssh
      hosts:
        - 127.0.1.5
        - "127.0.1.6:2222"
        - {name: web-3, address: web-3.localhost, user: deploy, base_dir: /opt/e}
      identity_file: keys/deploy
      known_hosts: keys/known_hosts
      max_parallel: 2
    router: {kind: embedded, listen: "127.0.0.1:8081"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entrega.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_an_ssh_target_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FLEET))
    target = config.environment("production").target
    assert isinstance(target, SshTargetConfig)
    assert [(h.address, h.port, h.name, h.user) for h in target.hosts] == [
        ("127.0.1.5", None, None, None), ("127.0.1.6", 2222, None, None),
        ("web-3.localhost", None, "web-3", "deploy")]
    assert target.hosts[2].base_dir == "/opt/e"
    assert (target.user, target.port, target.base_dir, target.runtime) == \
        ("root", 22, "/srv/entrega", "process")
    assert (target.max_parallel, target.connect_timeout_s, target.command_timeout_s) == \
        (2, 10.0, 60.0)
    assert target.instances == 3  # one per host by default
    assert target.path(target.known_hosts, config.base_dir) == tmp_path / "keys/known_hosts"


def test_the_podman_runtime_is_accepted_and_an_unknown_runtime_refused_with_file_and_line(
        tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FLEET.replace("max_parallel: 2", "runtime: podman")))
    target = config.environments[1].target
    assert isinstance(target, SshTargetConfig) and target.runtime == "podman"

    path = write(tmp_path, FLEET.replace("max_parallel: 2", "runtime: docker"))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:17: environments[1].target.runtime: "), message
    assert "'process' or 'podman'" in message, message

    result = subprocess.run([sys.executable, "-m", "entrega", "config", "validate", "-c",
                             str(path)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 1
    assert "'process' or 'podman'" in result.stderr
    assert "Error" not in result.stderr and "Traceback" not in result.stderr


def test_run_command_is_needed_only_where_instances_run_as_processes(tmp_path: Path) -> None:
    podman_only = (FLEET.replace("max_parallel: 2", "runtime: podman")
                   .replace('run:\n  command: "python app.py"\n', "run:\n  drain_s: 3\n"))
    staging = '  - name: staging\n    target: {kind: local}\n' \
              '    router: {kind: embedded, listen: "127.0.0.1:8080"}\n'
    assert staging in podman_only
    config = load_config(write(tmp_path, podman_only.replace(staging, "")))
    assert config.run.command == ""

    path = write(tmp_path, podman_only)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value).startswith(
        f"{path}:3: run.command: this field is required (environment staging runs the app "
        "as a process, on target local"), str(refused.value)


@pytest.mark.parametrize(("old", "new", "line", "expected"), [
    ("        - 127.0.1.5\n", "        - ''\n", 12, "environments[1].target.hosts[0]: a host is "
     "an address"),
    ('"127.0.1.6:2222"', '"127.0.1.6:22x"', 13,
     "environments[1].target.hosts[1]: expected HOST or HOST:PORT"),
    ("base_dir: /opt/e", "base_dir: opt/e", 14, "must be absolute"),
    ("max_parallel: 2", "max_parallel: 0", 17,
     "environments[1].target.max_parallel: Input should be greater than or equal to 1"),
    ("max_parallel: 2", "runtime: docker", 17, "environments[1].target.runtime: Input "
     "should be 'process' or 'podman'"),
    ("max_parallel: 2", "hostz: []", 17, "environments[1].target.hostz: unknown field"),
    ('"127.0.1.6:2222"', "127.0.1.5", 10, "host names must be unique, repeated: ['127.0.1.5']"),
    ("max_parallel: 2", "connect_timeout_s: 0", 17, "environments[1].target."
     "connect_timeout_s: Input should be greater than 0"),
], ids=["empty-host", "bad-port", "relative-base-dir", "no-parallelism", "unknown-runtime",
        "misspelt-field", "repeated-host", "zero-timeout"])
def test_bad_ssh_targets_name_file_line_and_field(tmp_path: Path, old: str, new: str,
                                                  line: int, expected: str) -> None:
    assert old in FLEET
    path = write(tmp_path, FLEET.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message


def test_a_router_on_every_host_is_read_and_refused_on_a_local_target_with_its_line(
        tmp_path: Path) -> None:
    every_host = FLEET.replace('router: {kind: embedded, listen: "127.0.0.1:8081"}',
                               'router: {kind: embedded, listen: "0.0.0.0:8081", '
                               'placement: every_host}')
    config = load_config(write(tmp_path, every_host))
    router = config.environment("production").router
    assert router.kind == "embedded" and router.placement == "every_host"
    assert config.environment("staging").router.placement == "front"  # type: ignore[union-attr]

    on_local = every_host.replace('router: {kind: embedded, listen: "127.0.0.1:8080"}',
                                  'router: {kind: embedded, listen: "127.0.0.1:8080", '
                                  'placement: every_host}')
    path = write(tmp_path, on_local)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:7: environments[0].router: "), message
    assert "every host of an ssh target" in message and "local" in message, message
    result = subprocess.run([sys.executable, "-m", "entrega", "config", "validate", "-c",
                             str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{path}:7:" in " ".join(result.stderr.split()), result.stderr


HAPROXY_EVERY_HOST = 'router: {kind: haproxy, listen: "0.0.0.0:8081", placement: every_host'


@pytest.mark.parametrize(("staging", "production", "line", "expected"), [
    ('router: {kind: haproxy, listen: "127.0.0.1:8080", placement: every_host}',
     HAPROXY_EVERY_HOST + "}", 7,
     "placement: every_host puts a router on every host of an ssh target; this "
     "environment's target is local"),
    ('router: {kind: embedded, listen: "127.0.0.1:8080"}',
     HAPROXY_EVERY_HOST + ", runtime_socket: /run/haproxy.sock}", 18,
     "runtime_socket: with placement: every_host each host's HAProxy keeps its runtime "
     "socket under the host agent's state directory"),
    ('router: {kind: haproxy, listen: "127.0.0.1:8080", placement: everywhere}',
     HAPROXY_EVERY_HOST + "}", 7, "placement"),
], ids=["haproxy-every-host-on-a-local-target", "haproxy-every-host-with-a-runtime-socket",
        "an-unknown-placement"])
def test_haproxy_on_every_host_is_refused_where_it_cannot_be_with_its_line(
        tmp_path: Path, staging: str, production: str, line: int, expected: str) -> None:
    text = FLEET.replace('router: {kind: embedded, listen: "127.0.0.1:8080"}', staging) \
        .replace('router: {kind: embedded, listen: "127.0.0.1:8081"}', production)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:{line}: environments["), message
    assert expected in message, message


def test_haproxy_on_every_host_is_read_with_its_settings(tmp_path: Path) -> None:
    text = FLEET.replace('router: {kind: embedded, listen: "127.0.0.1:8081"}',
                         HAPROXY_EVERY_HOST + ', stats_listen: "0.0.0.0:8404", '
                         'binary: /usr/sbin/haproxy}')
    router = load_config(write(tmp_path, text)).environment("production").router
    assert (router.kind, router.placement, router.listen) == \
        ("haproxy", "every_host", "0.0.0.0:8081")
    assert (router.stats_listen, router.binary) == ("0.0.0.0:8404", "/usr/sbin/haproxy")  # type: ignore[union-attr]
