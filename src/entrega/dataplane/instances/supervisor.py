"""The supervisor of one local instance: ``python -m entrega.dataplane.instances.supervisor``.

One supervisor process per instance keeps the app running while the controller comes and
goes: it detaches from whoever started it (double fork, new session), so killing the
controller, even with ``kill -9``, leaves supervisor and app running, and the controller
adopts them on restart by reading the instance directory.

Everything about the instance lives in its directory (``--dir``):

- ``supervisor.json``: the current state, rewritten atomically (tmp + rename) on every
  change; its fields are :class:`SupervisorState`'s;
- ``events.jsonl``: one JSON object per line: started, exited, restarted, stopping, killed,
  stopped; ``exit_code`` is the child's (negative: killed by that signal);
- ``stdout.log`` / ``stderr.log``: the app's output, appended to across restarts;
- ``supervisor.log``: the supervisor's own errors;
- ``stop_request.json``: written by whoever stops the instance before it sends SIGTERM,
  ``{"drain_s": 10}``, overriding ``--drain-s``;
- ``supervisor.lock``: held (flock) for the supervisor's lifetime, so there is never more
  than one supervisor per instance.

The app's environment comes from the controller on stdin (``--env-stdin``, one JSON
object read before detaching), never from the supervisor's own environment: the
supervisor itself runs with a minimal one, and the app's variables (``run.env`` may hold
its credentials) are neither in ``/proc/<supervisor>/environ`` nor on disk. A restarted
app gets the same environment again.

The app runs as ``/bin/sh -c "exec COMMAND"`` in a process group of its own. When it exits
without being asked to, it is restarted after a backoff that doubles from 0.1 s to 5 s and
starts over once a run has lasted 10 s. On SIGTERM the supervisor sends SIGTERM to the
group, waits up to ``drain_s`` for the app to exit, SIGKILLs the group, writes status
``stopped`` and exits 0. The loop blocks in ``select`` on a signal wakeup pipe, so an idle
supervisor costs no CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: What ``python -m`` runs: the controller starts it by this name and recognises its
#: supervisors by it in ``/proc/<pid>/cmdline``.
MODULE = "entrega.dataplane.instances.supervisor"
#: Names it ran under before: supervisors started by an older entrega keep running
#: through an upgrade, and the upgraded controller adopts them like its own.
FORMER_MODULES = ("entrega.targets.supervisor",)

STATE_FILE = "supervisor.json"
EVENTS_FILE = "events.jsonl"
STOP_REQUEST_FILE = "stop_request.json"
LOCK_FILE = "supervisor.lock"
SUPERVISOR_LOG = "supervisor.log"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"

#: Exit code of this program when another supervisor already runs the instance (two
#: controllers started it at once): the caller adopts that one.
EXIT_ALREADY_SUPERVISED = 3

#: First restart delay; doubled after each quick crash so a crash loop costs little CPU.
BACKOFF_INITIAL_S = 0.1
#: Longest restart delay: a fixed app comes back within 5 s of the fix (config, disk...).
BACKOFF_MAX_S = 5.0
#: A run at least this long counts as healthy, so the next crash restarts quickly again.
BACKOFF_RESET_AFTER_S = 10.0
#: Longest blocking wait of the loop; signals wake it earlier, so this only bounds drift.
IDLE_WAKEUP_S = 5.0

# Statuses written to supervisor.json.
STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, FAILED = (
    "starting", "running", "backoff", "stopping", "stopped", "failed")


@dataclasses.dataclass
class SupervisorState:
    """The content of ``supervisor.json``; times are Unix seconds."""

    supervisor_pid: int
    port: int
    command: str
    status: str = STARTING
    child_pid: int | None = None
    restarts: int = 0
    started_at: float | None = None  # start of the current (or last) child run
    last_exit_code: int | None = None
    next_start_at: float | None = None  # while in backoff
    stderr_offset: int = 0  # where the current (or last) run's output starts in stderr.log
    error: str | None = None
    updated_at: float = 0.0


#: What each field of :class:`SupervisorState` accepts from JSON (bool is no int here).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "supervisor_pid": (int,), "port": (int,), "command": (str,), "status": (str,),
    "child_pid": (int, type(None)), "restarts": (int,), "started_at": (int, float, type(None)),
    "last_exit_code": (int, type(None)), "next_start_at": (int, float, type(None)),
    "stderr_offset": (int,), "error": (str, type(None)), "updated_at": (int, float),
}
_REQUIRED = {f.name for f in dataclasses.fields(SupervisorState)
             if f.default is dataclasses.MISSING}


def read_state(instance_dir: Path) -> SupervisorState | None:
    """The last state written to ``instance_dir``, or None when there is none (yet).

    The file is validated field by field (a pid is an int...); one that is not a
    supervisor's state (hand-edited, from another program) counts as none, like a missing
    one, rather than handing a string pid to ``kill``. Fields the type lacks (a newer
    supervisor's) are ignored. Standard library only: the host agent reads it on hosts
    that have nothing else."""
    try:
        data = json.loads((instance_dir / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not _REQUIRED <= data.keys():
        return None
    fields = {name: value for name, value in data.items() if name in _FIELD_TYPES}
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, _FIELD_TYPES[name]):
            return None
    return SupervisorState(**fields)


def write_json_atomically(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class Supervisor:
    def __init__(self, *, instance_dir: Path, port: int, cwd: Path, command: str,
                 drain_s: float, app_env: dict[str, str] | None = None) -> None:
        self.dir = instance_dir
        self.cwd = cwd
        self.command = command
        #: the app's whole environment (None: the supervisor's own, when run by hand)
        self.app_env = app_env
        self.drain_s = drain_s
        self.state = SupervisorState(supervisor_pid=os.getpid(), port=port, command=command)
        self.child: subprocess.Popen[bytes] | None = None
        self.child_started = 0.0  # monotonic
        self.backoff_s = BACKOFF_INITIAL_S
        self.next_start = 0.0  # monotonic; when to (re)start the child
        self.stop_requested = False
        self.wakeup_r = -1

    # -- files ---------------------------------------------------------------------------

    def save(self, **changes: Any) -> None:
        self.state = dataclasses.replace(self.state, **changes, updated_at=time.time())
        write_json_atomically(self.dir / STATE_FILE, dataclasses.asdict(self.state))

    def event(self, event: str, **fields: object) -> None:
        line = json.dumps({"time": time.time(), "event": event, **fields})
        with open(self.dir / EVENTS_FILE, "a") as f:
            f.write(line + "\n")

    def requested_drain_s(self) -> float:
        try:
            return float(json.loads((self.dir / STOP_REQUEST_FILE).read_text())["drain_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.drain_s

    # -- signals ---------------------------------------------------------------------------

    def install_signals(self) -> None:
        self.wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        signal.set_wakeup_fd(wakeup_w)

        def on_stop(signum: int, frame: object) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # A Python handler (even a no-op) makes SIGCHLD write to the wakeup pipe.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def wait_for_signal(self, timeout_s: float) -> None:
        with contextlib.suppress(InterruptedError):
            select.select([self.wakeup_r], [], [], max(0.0, timeout_s))
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wakeup_r, 512):
                pass

    # -- the child -------------------------------------------------------------------------

    def spawn(self) -> None:
        self.child_started = time.monotonic()
        with open(self.dir / STDOUT_LOG, "ab") as out, open(self.dir / STDERR_LOG, "ab") as err:
            stderr_offset = os.fstat(err.fileno()).st_size
            try:
                self.child = subprocess.Popen(
                    ["/bin/sh", "-c", f"exec {self.command}"],
                    cwd=self.cwd, env=self.app_env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err,
                    start_new_session=True, preexec_fn=_die_with_parent,
                )
            except OSError as exc:  # e.g. the release directory was deleted: retry later
                err.write(f"entrega supervisor: cannot start {self.command!r}: {exc}\n".encode())
                self.save(error=f"cannot start: {exc}", stderr_offset=stderr_offset)
                self.on_unexpected_exit(127)
                return
        self.save(status=RUNNING, child_pid=self.child.pid, started_at=time.time(),
                  next_start_at=None, stderr_offset=stderr_offset, error=None)

    def reap(self) -> int | None:
        """The child's exit code once it has exited (its group killed too), else None."""
        assert self.child is not None
        # WNOWAIT leaves the zombie in place, so the group id cannot be reused before the
        # stragglers of the group (the app's own children) are killed.
        info = os.waitid(os.P_PID, self.child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None:
            return None
        self.kill_group(signal.SIGKILL)
        code = self.child.wait()
        self.child = None
        return code

    def kill_group(self, sig: int) -> None:
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.pid, sig)

    def on_unexpected_exit(self, code: int) -> None:
        ran_s = time.monotonic() - self.child_started
        if ran_s >= BACKOFF_RESET_AFTER_S:
            self.backoff_s = BACKOFF_INITIAL_S
        delay = self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        self.next_start = time.monotonic() + delay
        self.event("exited", exit_code=code, ran_s=round(ran_s, 3), restart_in_s=delay)
        self.save(status=BACKOFF, child_pid=None, last_exit_code=code,
                  next_start_at=time.time() + delay)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        self.event("started", port=self.state.port, command=self.command)
        self.spawn()
        while not self.stop_requested:
            if self.child is not None:
                code = self.reap()
                if code is not None:
                    self.on_unexpected_exit(code)
            if self.child is None and time.monotonic() >= self.next_start:
                # The event comes first, so whoever sees the new count in the state file
                # finds the event too.
                self.event("restarted", exit_code=self.state.last_exit_code,
                           restart=self.state.restarts + 1)
                self.save(restarts=self.state.restarts + 1)
                self.spawn()
            timeout = IDLE_WAKEUP_S
            if self.child is None:
                timeout = min(timeout, self.next_start - time.monotonic())
            if not self.stop_requested:
                self.wait_for_signal(timeout)
        self.stop()
        return 0

    def stop(self) -> None:
        drain_s = self.requested_drain_s()
        self.save(status=STOPPING)
        self.event("stopping", drain_s=drain_s)
        code: int | None = None
        killed = False
        if self.child is not None:
            self.kill_group(signal.SIGTERM)
            deadline = time.monotonic() + drain_s
            while (code := self.reap()) is None and time.monotonic() < deadline:
                self.wait_for_signal(min(deadline - time.monotonic(), IDLE_WAKEUP_S))
            if code is None:
                killed = True
                self.kill_group(signal.SIGKILL)
                self.event("killed", after_s=drain_s)
                assert self.child is not None
                self.child.wait()
                code = self.child.returncode
                self.child = None
        last = code if code is not None else self.state.last_exit_code
        self.event("stopped", exit_code=code, killed=killed)
        self.save(status=STOPPED, child_pid=None, last_exit_code=last, next_start_at=None)


def _load_prctl() -> Callable[[int, int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: an orphaned app keeps running until stopped by hand


_prctl = _load_prctl()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies (Linux only).

    Without this a ``kill -9`` of the supervisor would leave an unsupervised app holding
    its port; with it the app shuts down gracefully and the next ``start`` starts over.
    """
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _detach() -> IO[str]:
    """Fork; the first process exits once the daemon reports it is set up (or died).

    The controller waits for that first process, so it learns about early failures (the
    lock is held by another supervisor, bad arguments) from its exit code. The daemon is
    then nobody's child but init's: the controller never has to reap it, and the
    controller's death does not touch it.
    """
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd) as ready:
            report = ready.read()
        os._exit({"ok": 0, "locked": EXIT_ALREADY_SUPERVISED}.get(report, 1))
    os.close(read_fd)
    return os.fdopen(write_fd, "w")


def _read_app_env(stream: IO[str]) -> dict[str, str] | None:
    try:
        data = json.loads(stream.read())
    except ValueError:
        return None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        return None
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--dir", required=True, type=Path, help="the instance directory")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--cwd", required=True, type=Path, help="the app's working directory")
    parser.add_argument("--drain-s", type=float, default=10.0,
                        help="default wait between SIGTERM and SIGKILL on stop")
    parser.add_argument("--foreground", action="store_true", help="do not detach")
    parser.add_argument("--env-stdin", action="store_true",
                        help="read the app's whole environment from stdin (a JSON object)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND (a shell line)")
    args = parser.parse_args(argv)
    command = " ".join(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if not command:
        parser.error("no command given after --")
    instance_dir: Path = args.dir.resolve()
    if not args.cwd.is_dir():
        print(f"working directory {args.cwd} does not exist", file=sys.stderr)
        return 2
    app_env = None
    if args.env_stdin:
        app_env = _read_app_env(sys.stdin)
        if app_env is None:
            print("--env-stdin: expected a JSON object of strings on stdin", file=sys.stderr)
            return 2

    ready = None if args.foreground else _detach()
    lock = open(instance_dir / LOCK_FILE, "a")  # held (locked) until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another supervisor already runs {instance_dir}", file=sys.stderr)
        if ready is not None:
            ready.write("locked")
            ready.close()
        return EXIT_ALREADY_SUPERVISED
    supervisor = Supervisor(instance_dir=instance_dir, port=args.port, cwd=args.cwd,
                            command=command, drain_s=args.drain_s, app_env=app_env)
    supervisor.save(status=STARTING)
    (instance_dir / STOP_REQUEST_FILE).unlink(missing_ok=True)
    if ready is not None:
        ready.write("ok")
        ready.close()
    try:
        return supervisor.run()
    except Exception as exc:
        supervisor.kill_group(signal.SIGKILL)
        # In words: the controller quotes it to users; the traceback goes to the log.
        error = str(exc) or "an internal error of the supervisor (see supervisor.log)"
        supervisor.save(status=FAILED, child_pid=None, error=error)
        supervisor.event("failed", error=error)
        raise


if __name__ == "__main__":
    sys.exit(main())
