"""Test hosts for the fleet: each one a real OpenSSH ``sshd`` on its own loopback address.

Host i listens on 127.0.1.i (Linux routes all of 127.0.0.0/8 to ``lo``, so binding there
needs no setup) on a free port, with its own host key made by ``ssh-keygen``, its own
``authorized_keys`` holding the client key this module generates, its own pidfile and its
own base directory, all in a temporary directory. A ``known_hosts`` file lists every host's
key as ``[127.0.1.i]:port ssh-ed25519 ...``, as ``ssh-keyscan`` would write it.

A host can be *cut off* (its sshd and every session it serves frozen with SIGSTOP: the
address still takes TCP connections but nothing answers, like a host whose network
dropped), *stopped* (sshd killed: connections are refused) and brought back, and its host
key can be changed (a reinstalled host), which is what the fleet transport must notice.
Nothing here uses an address outside 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
#: sshd refuses to start without its privilege separation directory.
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT_S = 10.0


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path`` (private) and ``path.pub``; returns the public line."""
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, capture_output=True)
    return path.with_name(path.name + ".pub").read_text().strip()


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (sshd's per-connection processes call setsid, so
    a process group would miss them)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class TestHost:
    """One sshd on 127.0.1.<index>; ``base_dir`` is where entrega keeps its files there."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    index: int
    root: Path
    client_public_key: str
    address: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    frozen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.address = f"127.0.1.{self.index}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_dir.mkdir(exist_ok=True)
        self.port = free_port(self.address)
        self.host_key_line = keygen(self.root / "ssh_host_ed25519_key", f"host{self.index}")
        (self.root / "authorized_keys").write_text(self.client_public_key + "\n")
        self.config_path.write_text(self._sshd_config())

    @property
    def name(self) -> str:
        return f"host{self.index}"

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    @property
    def config_path(self) -> Path:
        return self.root / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.root / "sshd.log"

    def known_hosts_line(self) -> str:
        kind, key = self.host_key_line.split()[:2]
        return f"[{self.address}]:{self.port} {kind} {key}"

    def _sshd_config(self) -> str:
        return "\n".join([
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.root / 'ssh_host_ed25519_key'}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            # the temp dir is not root-owned 0755 all the way up
            "StrictModes no",
            f"AllowUsers {getpass.getuser()}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PrintMotd no",
            "LogLevel ERROR",
            # tests open many connections at once (parallelism is what they measure)
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "",
        ])

    def start(self) -> None:
        """Start sshd and wait until it answers with its banner."""
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config_path)],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd of {self.name} exited at start: "
                                   f"{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with socket.create_connection((self.address, self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {self.name} did not answer within "
                                   f"{START_TIMEOUT_S} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill sshd and every session it serves: connections are refused from now on."""
        self.bring_back()
        if self.process is None:
            return
        tree = [self.process.pid, *_children(self.process.pid)]
        _signal_all(tree, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def cut_off(self) -> None:
        """Freeze sshd and its sessions: the host stops answering without refusing, as when
        its network drops (the kernel still completes TCP handshakes into the backlog)."""
        if self.process is None:
            return
        self.frozen = [self.process.pid, *_children(self.process.pid)]
        _signal_all(self.frozen, signal.SIGSTOP)

    def bring_back(self) -> None:
        """Undo :meth:`cut_off`."""
        if self.frozen:
            pids = [*self.frozen, *_children(self.frozen[0])]
            self.frozen = []
            _signal_all(pids, signal.SIGCONT)

    def change_host_key(self) -> None:
        """A reinstalled host: a new host key, sshd restarted with it (same address, port)."""
        self.stop()
        self.host_key_line = keygen(self.root / "ssh_host_ed25519_key", f"host{self.index}")
        self.start()


@dataclass
class TestFleet:
    """N test hosts, the client key that logs in to all of them and their known_hosts."""

    __test__ = False

    root: Path
    hosts: list[TestHost]
    identity_file: Path
    known_hosts: Path

    @classmethod
    def start(cls, root: Path, count: int) -> TestFleet:
        root.mkdir(parents=True, exist_ok=True)
        identity = root / "client_ed25519"
        public = keygen(identity, "entrega-tests")
        hosts = [TestHost(index=i, root=root / f"host{i}", client_public_key=public)
                 for i in range(1, count + 1)]
        fleet = cls(root=root, hosts=hosts, identity_file=identity,
                    known_hosts=root / "known_hosts")
        try:
            for host in hosts:
                host.start()
        except BaseException:
            fleet.stop()
            raise
        fleet.write_known_hosts()
        return fleet

    def write_known_hosts(self, hosts: list[TestHost] | None = None) -> None:
        """known_hosts with the keys the hosts had when the fleet started (or ``hosts``')."""
        listed = self.hosts if hosts is None else hosts
        self.known_hosts.write_text("".join(h.known_hosts_line() + "\n" for h in listed))

    def stop(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.stop()
