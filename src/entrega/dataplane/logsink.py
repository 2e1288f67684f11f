"""``python -m entrega.dataplane.logsink``: HAProxy's per-request log in, counters out.

HAProxy writes one log line per finished request (``accesslog.LOG_FORMAT``) into a ring
buffer of its own (a ``ring`` section, 4 MiB), whose forwarder streams the lines, one per
``\n``, to this process's unix stream socket (``--logs``). The sink keeps per-release
counters, latency buckets, a ring of recent latencies and a latency sketch
(``accesslog.py``), and answers on its control socket (``--control``) with one JSON
document per connection:

    metrics    {"pid", "started_at", "lines", "ignored", "releases": {version: counters}}
    shutdown   {"pid", "stopping": true}, then the sink exits 0

Why a ring and a stream, not datagrams: a unix datagram socket queues
``net.unix.max_dgram_qlen`` lines (10 by default) and UDP a few hundred, so HAProxy drops
lines as soon as the sink is a moment late (9% of them at 3,000 requests/s here). HAProxy
never waits for its log either way; the ring holds the lines the sink has not read yet,
and its forwarder reconnects when the sink is back, sending what the ring still holds.

Like HAProxy, the sink is a data-plane process: started detached by the HAProxy adapter,
it outlives the controller and is adopted by the next one (it answers on ``--control``).
Its counters are one cumulative series named by ``started_at``, fixed when it starts: a
reload or a restart of HAProxy changes nothing here (a reload's new worker connects with
a ring of its own, the old one sends its last lines and leaves), and a restart of the
sink is a new series (the windows see the new ``started_at`` and start over).

Startup order makes the pidfile a readiness signal: both sockets are bound, then the
pidfile is written. A sink already answering on ``--control`` is left alone (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from entrega.dataplane.accesslog import AccessLogCounters
from entrega.runner.pidfile import remove_pidfile, write_pidfile

#: exit code when the sink cannot start (a sink already answers, a path is unusable)
EXIT_USAGE = 2
_COMMAND_TIMEOUT_S = 5.0
#: a line longer than this is no line of ours (HAProxy's own are cut at 1024 bytes)
MAX_LINE_BYTES = 64 * 1024


class _LineStream(asyncio.Protocol):
    """One connection of HAProxy's ring forwarder: lines, split on ``\n``."""

    def __init__(self, counters: AccessLogCounters) -> None:
        self.counters = counters
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > MAX_LINE_BYTES:
            self.pending = b""
            self.counters.ignored += 1
        feed = self.counters.feed
        for line in lines:
            if line:
                feed(line)


class LogSink:
    def __init__(self, *, logs: Path, control: Path, pidfile: Path | None) -> None:
        self.logs = logs
        self.control = control
        self.pidfile = pidfile
        self.counters = AccessLogCounters()
        self.started_at = time.time()
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        if await _answers(self.control):
            print(f"logsink: a sink already answers on {self.control}", file=sys.stderr)
            return EXIT_USAGE
        loop = asyncio.get_running_loop()
        try:
            for path in (self.logs, self.control):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a dead sink's socket: no one listens on it any more
            lines = await loop.create_unix_server(lambda: _LineStream(self.counters),
                                                  path=str(self.logs))
            server = await asyncio.start_unix_server(self._command, path=str(self.control))
        except OSError as exc:
            print(f"logsink: cannot bind {self.logs} / {self.control}: {exc.strerror}",
                  file=sys.stderr)
            return EXIT_USAGE
        # HAProxy runs as the same user; nobody else may write lines or read counters
        for path in (self.logs, self.control):
            os.chmod(path, 0o600)
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
            lines.close()
            for path in (self.control, self.logs):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if self.pidfile is not None:
                remove_pidfile(self.pidfile)
        return 0

    def snapshot(self) -> dict[str, object]:
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
                   help="unix socket where HAProxy's ring forwarder streams its log lines")
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
