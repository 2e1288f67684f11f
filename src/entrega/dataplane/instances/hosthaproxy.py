"""HAProxy and its log sink on one fleet host: started, adopted, reloaded and stopped here.

With ``router: {kind: haproxy, placement: every_host}`` every host of an ``ssh`` target
runs its own HAProxy behind the user's load balancer. The controller keeps driving it as
it drives the one on its own machine (``routers/haproxy/``: the same configuration, maps
and runtime API commands, the runtime socket reached through the SSH connection); what
must happen on the host itself happens here, in the host agent:

- ``ensure``: the files the controller rendered are written when none are there yet, the
  log sink (``python -m entrega.dataplane.logsink``, from the agent's own sources, with
  the host's ``python3``) is started unless it answers, then HAProxy (``-W -D``: its
  master detaches, so it outlives the SSH command and the controller) unless its runtime
  socket answers. Sink first: no request of a new HAProxy goes unlogged. An HAProxy
  killed outright comes back from its files on disk, which hold the last table set.
- ``write``: the files of a new table (temp, then rename), so a restart or a reload reads it.
- ``reload``: the configuration is checked (``haproxy -c``), then the master reloads it
  (SIGUSR2: the listeners stay open, the old worker finishes its requests).
- ``stop``: HAProxy soft-stops (SIGUSR1 to the master), then the sink.

Paths come from the controller, which computes them as for its own HAProxy (under the
agent's state directory: ``routers/<app>-<environment>/``), so a restarted controller
reaches a running HAProxy before it asks the agent anything. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from entrega.errors import TargetError
from entrega.procenv import data_plane_env, minimal_env
from entrega.runner import LocalRunner, Program
from entrega.waiting import wait_until_sync

#: HAProxy reads its configuration and binds in well under a second; a slow host gets this.
START_TIMEOUT_S = 15.0
#: ``hard-stop-after`` is 60 s in the configuration the controller renders, plus exiting.
STOP_TIMEOUT_S = 70.0
#: The sink binds two sockets and answers from memory.
SINK_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 5.0
#: Where a distribution installs HAProxy; a non-login SSH session's PATH often lacks it.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class HostHaproxy:
    """One environment's HAProxy and log sink on this host. Every method is idempotent."""

    def __init__(self, *, dir: Path, socket: Path, logs: Path, control: Path,
                 binary: str = "haproxy", where: str = "haproxy") -> None:
        self.dir = dir
        self.config = dir / "haproxy.cfg"
        self.pidfile = dir / "haproxy.pid"
        self.socket = socket
        self.logs = logs
        self.control = control
        self.sink_pidfile = dir / "logsink.pid"
        self.sink_log = dir / "logsink.log"
        self.binary = binary
        self.where = where
        self.runner = LocalRunner()

    def ensure(self, files: dict[str, str]) -> dict[str, object]:
        """Adopt or start the sink and HAProxy; their pids and what was started now."""
        with self._exclusive():
            if not self.config.exists():
                self.write(files)
            sink_started = self._ensure_sink()
            started = self._haproxy_pid() is None
            if started:
                self._start()
        return {"pid": self.runner.read_pid(self.pidfile), "started": started,
                "sink_pid": self.runner.read_pid(self.sink_pidfile),
                "sink_started": sink_started}

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One start at a time per HAProxy, whichever agent process asks: two HAProxies
        started on one configuration would both bind its listener (SO_REUSEPORT) and
        split its traffic, one of them no longer reachable on the runtime socket."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".haproxy.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write(self, files: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            if "/" in name or name.startswith("."):
                raise TargetError(f"{self.where}: refused to write {name!r}: a file of its "
                                  "own directory was expected")
            path = self.dir / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def reload(self) -> dict[str, object]:
        binary = self._binary()
        check = self.runner.run(Program([binary, "-c", "-q", "-f", str(self.config)],
                                        env=minimal_env()), timeout_s=START_TIMEOUT_S)
        if check is None or check.exit_code != 0:
            problem = _tail(check.output) if check else f"no verdict in {START_TIMEOUT_S:g} s"
            raise TargetError(f"{self.where}: the new configuration is invalid: {problem}",
                              hint=f"configuration on the host: {self.config}")
        pid = self.runner.read_pid(self.pidfile)
        if pid is None or not self.runner.send_signal(pid, signal.SIGUSR2):
            raise TargetError(f"{self.where}: its master (pidfile {self.pidfile}) is not "
                              "running, cannot reload", hint="the controller starts it again")
        return {"pid": pid}

    def stop(self) -> dict[str, object]:
        """Soft-stop HAProxy (requests in flight finish), then the sink."""
        stopped = False
        pid = self.runner.read_pid(self.pidfile)
        if pid is not None and self.runner.is_running(pid, marks=(str(self.config),)):
            self.runner.send_signal(pid, signal.SIGUSR1)
            if wait_until_sync(lambda: not self.runner.is_running(
                    pid, marks=(str(self.config),)), timeout_s=STOP_TIMEOUT_S) is None:
                raise TargetError(f"{self.where} (pid {pid}) still runs "
                                  f"{STOP_TIMEOUT_S:g} s after SIGUSR1")
            stopped = True
        self.pidfile.unlink(missing_ok=True)
        if self._sink_answer("shutdown") is not None:
            if wait_until_sync(lambda: self._sink_answer("metrics") is None,
                               timeout_s=SINK_TIMEOUT_S) is None:
                raise TargetError(f"{self.where}: its log sink still answers "
                                  f"{SINK_TIMEOUT_S:g} s after shutdown",
                                  hint=f"its log on the host: {self.sink_log}")
            stopped = True
        return {"stopped": stopped}

    # -- helpers -----------------------------------------------------------------------

    def _binary(self) -> str:
        """The executable: as configured when it names a path, else found on PATH or in
        the sbin directories (where the distribution puts it)."""
        if "/" in self.binary:
            return self.binary
        found = shutil.which(self.binary) or shutil.which(
            self.binary, path=os.pathsep.join(SBIN_DIRS))
        if found is None:
            raise TargetError(f"{self.where}: {self.binary!r} is not installed on this host "
                              f"(not on PATH nor in {', '.join(SBIN_DIRS)})",
                              hint="install it (apt-get install haproxy) or set "
                                   "router.binary to its path")
        return found

    def _start(self) -> None:
        stale = self.runner.read_pid(self.pidfile)
        if stale is not None and self.runner.is_running(stale, marks=(str(self.config),)):
            # a master that does not answer (hung, or still starting past its time): it
            # goes, with its workers, before another binds the same listeners
            if wait_until_sync(self._haproxy_pid, timeout_s=START_TIMEOUT_S) is not None:
                return
            self.runner.send_signal(stale, signal.SIGKILL, group=True)
            self.runner.send_signal(stale, signal.SIGKILL)
        argv = [self._binary(), "-W", "-D", "-f", str(self.config), "-p", str(self.pidfile)]
        try:
            done = self.runner.run(Program(argv, env=minimal_env()), timeout_s=START_TIMEOUT_S)
        except OSError as exc:
            raise TargetError(f"cannot start {self.where}: {exc.strerror}") from None
        if done is None or done.exit_code != 0:
            problem = (f"exit {done.exit_code}: {_tail(done.output)}" if done
                       else f"no answer within {START_TIMEOUT_S:g} s")
            raise TargetError(f"{self.where} did not start ({problem})",
                              hint=f"configuration on the host: {self.config}")
        if wait_until_sync(self._haproxy_pid, timeout_s=START_TIMEOUT_S) is None:
            raise TargetError(f"{self.where} does not answer on {self.socket} "
                              f"{START_TIMEOUT_S:g} s after starting")

    def _haproxy_pid(self) -> str | None:
        """The worker's pid, as HAProxy's ``show info`` says; None when nothing answers."""
        answer = _exchange(self.socket, b"show info\n")
        if answer is None:
            return None
        for line in answer.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Pid" and value.strip():
                return value.strip()
        return None

    def _ensure_sink(self) -> bool:
        """True when it started the sink, False when one answered."""
        if self._sink_answer("metrics") is not None:
            return False
        argv = [sys.executable, "-m", "entrega.dataplane.logsink", "--logs", str(self.logs),
                "--control", str(self.control), "--pidfile", str(self.sink_pidfile)]
        offset = self.sink_log.stat().st_size if self.sink_log.exists() else 0
        try:
            started = self.runner.start(Program(argv, env=data_plane_env(), log=self.sink_log))
        except OSError as exc:
            raise TargetError(f"cannot start the log sink of {self.where}: "
                              f"{exc.strerror}") from None

        def answering() -> bool:
            if self._sink_answer("metrics") is not None:
                return True
            code = started.exit_code()
            if code is not None:
                raise TargetError(f"the log sink of {self.where} exited with code {code} "
                                  f"while starting: {self._sink_tail(offset)}",
                                  hint=f"its log on the host: {self.sink_log}")
            return False

        if not wait_until_sync(answering, timeout_s=SINK_TIMEOUT_S):
            started.kill()
            raise TargetError(f"the log sink of {self.where} did not answer within "
                              f"{SINK_TIMEOUT_S:g} s", hint=f"its log on the host: "
                                                         f"{self.sink_log}")
        return True

    def _sink_answer(self, command: str) -> dict[str, object] | None:
        answer = _exchange(self.control, command.encode() + b"\n")
        try:
            found = json.loads(answer) if answer else None
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def _sink_tail(self, offset: int, lines: int = 8) -> str:
        try:
            with open(self.sink_log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return _tail(text, lines)


def _exchange(path: Path, request: bytes) -> bytes | None:
    """All that the unix socket ``path`` answers to ``request``; None when nothing does."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(ANSWER_TIMEOUT_S)
            sock.connect(str(path))
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    return b"".join(chunks)


def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"

