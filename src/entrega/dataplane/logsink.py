"""``python -m entrega.dataplane.logsink``: HAProxy's per-request log in, counters out.

HAProxy sends one log line per finished request (``accesslog.LOG_FORMAT``) to this
process's unix datagram socket (``--logs``); the sink keeps per-release counters, latency
buckets, a ring of recent latencies and a latency sketch (``accesslog.py``), and answers
on its unix stream socket (``--control``) with one JSON document per connection:

    metrics    {"pid", "started_at", "lines", "ignored", "releases": {version: counters}}
    shutdown   {"pid", "stopping": true}, then the sink exits 0

Like HAProxy, the sink is a data-plane process: started detached by the HAProxy adapter,
it outlives the controller and is adopted by the next one (it answers on ``--control``).
Its counters are one cumulative series named by ``started_at``, fixed when it starts: a
reload or a restart of HAProxy changes nothing here, and a restart of the sink is a new
series (the windows see the new ``started_at`` and start over).

Startup order makes the pidfile a readiness signal: both sockets are bound, then the
pidfile is written. A sink already answering on ``--control`` is left alone (exit 2).
A datagram socket queues a bounded number of lines; a line HAProxy cannot queue is
dropped and counted by HAProxy (``DroppedLogs`` in ``show info``), never waited for, so
a stalled sink never slows traffic down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from entrega.dataplane.accesslog import AccessLogCounters
from entrega.runner.pidfile import remove_pidfile, write_pidfile

#: exit code when the sink cannot start (a sink already answers, a path is unusable)
EXIT_USAGE = 2
#: asked of the kernel for the datagram queue; it caps it at net.core.rmem_max
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
_COMMAND_TIMEOUT_S = 5.0
#: datagrams read per wake-up (the kernel queues a few hundred at most)
_BATCH = 4096


class LogSink:
    def __init__(self, *, logs: Path, control: Path, pidfile: Path | None) -> None:
        self.logs = logs
        self.control = control
        self.pidfile = pidfile
        self.counters = AccessLogCounters()
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self._datagrams: socket.socket | None = None

    async def run(self) -> int:
        if await _answers(self.control):
            print(f"logsink: a sink already answers on {self.control}", file=sys.stderr)
            return EXIT_USAGE
        loop = asyncio.get_running_loop()
        try:
            datagrams = _bind_datagram(self.logs)
            with contextlib.suppress(FileNotFoundError):
                self.control.unlink()
            server = await asyncio.start_unix_server(self._command, path=str(self.control))
        except OSError as exc:
            print(f"logsink: cannot bind {self.logs} / {self.control}: {exc.strerror}",
                  file=sys.stderr)
            return EXIT_USAGE
        os.chmod(self.control, 0o600)
        self._datagrams = datagrams
        loop.add_reader(datagrams, self._read_lines)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.pidfile is not None:
            write_pidfile(self.pidfile)
        print(f"logsink: pid {os.getpid()} reading {self.logs}, answering on {self.control}",
              flush=True)
        try:
            await self.stopping.wait()
        finally:
            server.close()
            loop.remove_reader(datagrams)
            datagrams.close()
            for path in (self.control, self.logs):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if self.pidfile is not None:
                remove_pidfile(self.pidfile)
        return 0

    def _read_lines(self) -> None:
        """Count the lines queued now (one per datagram; a syslog transport may batch
        several, newline separated), at most a batch per call so that a flood of lines
        never keeps the control socket waiting."""
        assert self._datagrams is not None
        recv, feed = self._datagrams.recv, self.counters.feed
        for _ in range(_BATCH):
            try:
                data = recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            for line in data.splitlines():
                if line:
                    feed(line)

    def snapshot(self) -> dict[str, object]:
        """The counters, with the lines queued by now counted first (HAProxy sends a
        request's line as it finishes the request, so a reader soon sees all of it)."""
        if self._datagrams is not None:
            self._read_lines()
        return {"pid": os.getpid(), "started_at": self.started_at, **self.counters.to_dict()}

    async def _command(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                command = (await reader.readline()).strip()
            if command == b"metrics":
                answer: dict[str, object] = self.snapshot()
            elif command == b"shutdown":
                answer = {"pid": os.getpid(), "stopping": True}
                self.stopping.set()
            else:
                answer = {"error": f"unknown command {command[:40]!r}: "
                                   "expected metrics or shutdown"}
            writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError):
            pass  # the client left or said nothing: nothing to answer
        finally:
            writer.close()


def _bind_datagram(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead sink's socket: no one reads it any more
        sock.bind(str(path))
        os.chmod(path, 0o600)  # HAProxy runs as the same user; nobody else may write
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _answers(control: Path) -> bool:
    if not control.exists():
        return False
    try:
        async with asyncio.timeout(_COMMAND_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(control))
            writer.write(b"metrics\n")
            answered = bool(await reader.readline())
            writer.close()
            return answered
    except (OSError, TimeoutError):
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m entrega.dataplane.logsink",
                                description="per-release counters from HAProxy's request log")
    p.add_argument("--logs", required=True, type=Path,
                   help="unix datagram socket HAProxy sends its log lines to")
    p.add_argument("--control", required=True, type=Path,
                   help="unix socket answering 'metrics' and 'shutdown'")
    p.add_argument("--pidfile", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sink = LogSink(logs=args.logs, control=args.control, pidfile=args.pidfile)
    return asyncio.run(sink.run())


if __name__ == "__main__":
    sys.exit(main())
