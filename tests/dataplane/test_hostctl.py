"""``python -m entrega.dataplane.instances.hostctl``: the host agent as one command per
operation, JSON in on stdin, JSON out on stdout, as the SSH target will run it on a host.

Real subprocesses for the lifecycle and for the proof that a host needs nothing but
Python and entrega's sources (``python -S -I``: no site-packages at all); the error
answers are also checked in process, table by table."""

from __future__ import annotations

import http.server
import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import entrega
from entrega.dataplane.instances import hostctl
from entrega.dataplane.instances.host import HostInstances
from entrega.net import free_port

from .hostagent import COMMAND, answer_of, get, pid_alive, release_dir

pytestmark = pytest.mark.real

SRC = Path(entrega.__file__).resolve().parents[1]

#: Runs hostctl with nothing on sys.path but the standard library and SRC (``-I`` ignores
#: PYTHONPATH and the current directory, ``-S`` skips site-packages), then reports on
#: stderr, as its last line, every top-level module it loaded that is not the stdlib's.
ISOLATED = f"""\
import runpy, sys
sys.path.append({str(SRC)!r})
sys.argv = ["hostctl", *sys.argv[1:]]
try:
    runpy.run_module("entrega.dataplane.instances.hostctl", run_name="__main__",
                     alter_sys=True)
except SystemExit as exit:
    code = exit.code
foreign = sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names)
                 - {{"entrega", "__main__"}})
sys.stderr.write("\\nforeign modules: " + ",".join(foreign) + "\\n")
sys.exit(code)
"""


def hostctl_process(operation: str, request: object, *, isolated: bool = False,
                    raw: str | None = None) -> tuple[int, dict[str, Any], str]:
    """Run hostctl as a real process: exit code, the one JSON object on stdout, stderr."""
    argv = ([sys.executable, "-S", "-I", "-c", ISOLATED, operation] if isolated
            else [sys.executable, "-m", "entrega.dataplane.instances.hostctl", operation])
    done = subprocess.run(argv, input=raw if raw is not None else json.dumps(request),
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC)})
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"expected one line of JSON on stdout, got {done.stdout!r}"
    return done.returncode, json.loads(lines[0]), done.stderr


@pytest.fixture
def where(tmp_path: Path) -> Iterator[dict[str, str]]:
    where = {"app": "tiny", "environment": "staging", "state_dir": str(tmp_path / "state"),
             "address": "127.0.0.1"}
    yield where
    # No instance outlives its test, even a failing one.
    agent = HostInstances(app="tiny", environment="staging", state_dir=tmp_path / "state")
    for version in agent.versions():
        agent.stop(version, drain_s=0.5)


def start_request(where: dict[str, str], path: Path, **overrides: object) -> dict[str, object]:
    return {**where, "version": "1.0.0", "path": str(path), "command": COMMAND,
            "env": {"GREETING": "hola"}, "instances": 2, **overrides}


def test_start_observe_explain_stop_as_commands(where: dict[str, str], tmp_path: Path) -> None:
    path = release_dir(tmp_path, "1.0.0")

    code, started, _ = hostctl_process("start", start_request(where, path))
    assert code == 0
    endpoints = started["endpoints"]
    assert [(e["host"], e["instance"]) for e in endpoints] == [("127.0.0.1", "0"),
                                                               ("127.0.0.1", "1")]
    assert [answer_of(e["port"]) for e in endpoints] == ["1.0.0 0", "1.0.0 1"]

    code, again, _ = hostctl_process("start", start_request(where, path))
    assert (code, again) == (0, started)  # a repeated start adopts

    code, observed, _ = hostctl_process("observe", where)
    assert code == 0
    assert [(i["version"], i["instance"], i["port"], i["alive"], i["status"])
            for i in observed["instances"]] == [
        ("1.0.0", "0", endpoints[0]["port"], True, "running"),
        ("1.0.0", "1", endpoints[1]["port"], True, "running")]

    code, explained, _ = hostctl_process("explain", {**where, "version": "1.0.0"})
    assert code == 0
    assert [(i["instance"], i["exits"], i["note"]) for i in explained["instances"]] == [
        ("0", 0, ""), ("1", 0, "")]

    code, stopped, _ = hostctl_process("stop", {**where, "version": "1.0.0", "drain_s": 2})
    assert (code, stopped) == (0, {"stopped": ["0", "1"]})
    assert all(get(e["port"]) is None for e in endpoints)
    assert not any(pid_alive(i["pid"]) for i in observed["instances"])
    code, stopped, _ = hostctl_process("stop", {**where, "version": "1.0.0", "drain_s": 2})
    assert (code, stopped) == (0, {"stopped": []})  # a repeated stop does nothing


def test_hostctl_needs_only_the_standard_library_and_entrega(where: dict[str, str],
                                                             tmp_path: Path) -> None:
    path = release_dir(tmp_path, "1.0.0")

    code, started, stderr = hostctl_process("start", start_request(where, path, instances=1),
                                            isolated=True)

    assert code == 0, stderr
    assert stderr.splitlines()[-1] == "foreign modules: "
    [endpoint] = started["endpoints"]
    assert answer_of(endpoint["port"]) == "1.0.0 0"
    for operation, request in [("observe", where),
                               ("explain", {**where, "version": "1.0.0"}),
                               ("stop", {**where, "version": "1.0.0", "drain_s": 1})]:
        code, _, stderr = hostctl_process(operation, request, isolated=True)
        assert code == 0, stderr
        assert stderr.splitlines()[-1] == "foreign modules: ", operation


def test_a_missing_release_directory_is_a_clear_error_from_the_process(
        where: dict[str, str], tmp_path: Path) -> None:
    code, answer, stderr = hostctl_process(
        "start", start_request(where, tmp_path / "missing"))

    assert code == hostctl.EXIT_FAILED
    assert answer == {
        "error": f"cannot start tiny 1.0.0 in staging: release directory "
                 f"{tmp_path / 'missing'} does not exist",
        "hint": "unpack the release's artifact there first"}
    assert "Traceback" not in stderr


def test_bad_json_from_the_process_is_a_request_error(where: dict[str, str]) -> None:
    code, answer, stderr = hostctl_process("observe", None, raw="{not json")

    assert code == hostctl.EXIT_BAD_REQUEST
    assert answer["error"].startswith("the request on stdin is not JSON: ")
    assert "Traceback" not in stderr


WHERE = {"app": "tiny", "environment": "staging", "state_dir": "/nonexistent/state"}


@pytest.mark.parametrize(("argv", "stdin", "code", "error"), [
    (["observe"], "{not json", 2, "the request on stdin is not JSON: "),
    (["observe"], "", 2, "expected one JSON object on stdin, got nothing"),
    (["observe"], "[1, 2]", 2, "the request on stdin must be a JSON object"),
    (["observe"], '{"app": "a", "app": "b"}', 2, "the request on stdin is not JSON: "
                                                 "duplicate key 'app'"),
    (["frobnicate"], "{}", 2, "unknown operation 'frobnicate'"),
    ([], "{}", 2, "usage: python -m entrega.dataplane.instances.hostctl OPERATION"),
    (["--help"], "{}", 2, "usage: "),
    (["observe"], json.dumps({**WHERE, "state_dir": "state"}), 2,
     "field 'state_dir': expected an absolute path, got 'state'"),
    (["observe"], json.dumps({"app": "tiny", "environment": "staging"}), 2,
     "field 'state_dir' is missing: expected a string"),
    (["observe"], json.dumps({**WHERE, "verison": "1.0.0"}), 2,
     "observe: unknown field 'verison'"),
    (["stop"], json.dumps({**WHERE, "version": "1.0.0", "drain_s": "10"}), 2,
     "field 'drain_s': expected a number, got a string"),
    (["stop"], json.dumps({**WHERE, "version": "1.0.0", "drain_s": -1}), 2,
     "field 'drain_s': expected a number of seconds >= 0, got -1"),
    (["start"], json.dumps({**WHERE, "version": "1.0.0", "path": "/x", "command": "c",
                            "env": {"A": 1}, "instances": 1}), 2,
     "field 'env': expected an object of strings"),
    (["start"], json.dumps({**WHERE, "version": "1.0.0", "path": "/x", "command": "c",
                            "env": {}, "instances": True}), 2,
     "field 'instances': expected an integer, got true or false"),
    (["start"], json.dumps({**WHERE, "version": "1.0.0", "path": "/x", "command": "c",
                            "env": {}, "instances": 1, "ports": [3, 2]}), 2,
     "field 'ports': expected [low, high], two ports with low <= high"),
    (["explain"], json.dumps({**WHERE, "version": "../etc"}), 1,
     "cannot use version '../etc' as the name of a directory of instances"),
    (["observe"], json.dumps({**WHERE, "environment": "a/b"}), 1,
     "cannot use environment 'a/b'"),
], ids=["bad-json", "empty", "not-an-object", "duplicate-key", "unknown-operation",
        "no-operation", "option", "relative-state-dir", "missing-field", "unknown-field",
        "drain-not-a-number", "negative-drain", "env-not-strings", "bool-instances",
        "ports-reversed", "unsafe-version", "unsafe-environment"])
def test_a_wrong_request_gets_one_clear_json_error(argv: list[str], stdin: str, code: int,
                                                    error: str) -> None:
    out = io.StringIO()

    assert hostctl.main(argv, stdin=io.StringIO(stdin), stdout=out) == code

    [line] = out.getvalue().splitlines()
    answer = json.loads(line)
    assert set(answer) == {"error", "hint"}
    assert answer["error"].startswith(error)
    for class_name in ("Error", "Exception", "BadRequest", "Traceback"):
        assert class_name not in answer["error"]


def test_an_unknown_operation_is_answered_with_the_known_ones() -> None:
    out = io.StringIO()
    hostctl.main(["frobnicate"], stdin=io.StringIO("{}"), stdout=out)
    assert json.loads(out.getvalue())["hint"] == (
        "one of start, observe, explain, stop, router-start, router-stop, haproxy-start, "
        "haproxy-write, haproxy-reload, haproxy-stop, router-retire")


def test_an_internal_error_keeps_its_traceback_off_stdout(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(request: object) -> dict[str, object]:
        raise KeyError("a bug")

    monkeypatch.setitem(hostctl.OPERATIONS, "observe", broken)
    out = io.StringIO()

    assert hostctl.main(["observe"], stdin=io.StringIO("{}"), stdout=out) == 1

    answer = json.loads(out.getvalue())
    assert answer["error"] == "observe failed on this host with an internal error of the " \
                              "host agent"
    assert "KeyError" not in out.getvalue()
    assert "Traceback" in capsys.readouterr().err




#: Stands in for httptools and uvloop on a host's python3 that has neither.
_MISSING = "raise ImportError('not installed on this host')\n"


def test_router_start_runs_the_router_without_httptools_and_adopts_it(
        where: dict[str, str], tmp_path: Path) -> None:
    """A fleet host's router: started by the agent (itself stdlib-only) on a python3
    without httptools or uvloop, serving real traffic through the standard-library parser,
    adopted by the next router-start, stopped by router-stop; a wrong field is refused."""
    hidden = tmp_path / "hidden"
    for name in ("httptools", "uvloop"):
        (hidden / name).mkdir(parents=True)
        (hidden / name / "__init__.py").write_text(_MISSING)
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    listen = f"127.0.0.1:{free_port()}"
    request = {**where, "listen": listen}

    def hostctl_run(operation: str, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "entrega.dataplane.instances.hostctl", operation],
            input=json.dumps(body), capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{hidden}:{SRC}"})
        return done.returncode, json.loads(done.stdout.splitlines()[-1])

    try:
        code, answer, stderr = hostctl_process("router-start", request, isolated=True)
        assert stderr.strip().endswith("foreign modules:"), stderr  # the agent: stdlib only
        hostctl_run("router-stop", request)
        code, answer = hostctl_run("router-start", request)
        assert code == 0, answer
        router = answer["router"]
        assert router["started"] is True and router["listen"] == listen
        code, again = hostctl_run("router-start", request)
        assert code == 0 and again["router"]["started"] is False
        assert again["router"]["pid"] == router["pid"]
        table = {"backends": {"v1": [{"host": "127.0.0.1", "port": backend.server_port,
                                      "instance": "i0"}]}, "weights": {"v1": 100}}
        put = _control(router["control"], "PUT", "/routes", json.dumps(table).encode())
        assert put.startswith(b"HTTP/1.1 200"), put
        port = int(listen.rsplit(":", 1)[1])
        answer_get = _http(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer_get.startswith(b"HTTP/1.1 200") and answer_get.endswith(b"GET /hello")
        chunked = _http(port, b"POST /in HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        assert chunked.startswith(b"HTTP/1.1 200") and chunked.endswith(b"POST /in abc")
        log = (tmp_path / "state" / "routers" / "tiny-staging" / "router.log").read_text()
        assert "Traceback" not in log, log
        code, refused = hostctl_run("router-start", {**request, "lisen": listen})
        assert code == hostctl.EXIT_BAD_REQUEST and "'lisen'" in str(refused["error"])
    finally:
        code, stopped = hostctl_run("router-stop", request)
        backend.shutdown()
    assert code == 0 and stopped == {"stopped": True}
    assert hostctl_run("router-stop", request)[1] == {"stopped": False}


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers its method, path and (dechunked) body."""

    protocol_version = "HTTP/1.1"

    def _answer(self, body: bytes) -> None:
        text = f"{self.command} {self.path}".encode() + (b" " + body if body else b"")
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(b"")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = b""
        if self.headers.get("Transfer-Encoding") == "chunked":
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(body)

    def log_message(self, *args: object) -> None:
        pass


def _http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return _read_all(sock)


def _control(path: str, method: str, target: str, body: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_serve_answers_request_lines_by_id_each_in_its_own_thread(
        monkeypatch: pytest.MonkeyPatch, where: dict[str, str]) -> None:
    """A slow request (a stop draining) never holds the next: request 1 waits until
    request 2 has been answered, which a one-at-a-time agent could never do."""
    second_done = threading.Event()
    real_observe = hostctl.OPERATIONS["observe"]

    def observe(request: Any) -> dict[str, object]:
        if request.get("version") == "slow":
            return {"waited": second_done.wait(timeout=10)}
        answer = real_observe(request)
        second_done.set()
        return answer

    monkeypatch.setitem(hostctl.OPERATIONS, "observe", observe)
    lines = [json.dumps({"id": 1, "op": "observe", "request": {**where, "version": "slow"}}),
             json.dumps({"id": "two", "op": "observe", "request": where}),
             "not json", json.dumps({"op": "observe", "request": where}),
             json.dumps({"id": 3, "op": "frobnicate", "request": {}}),
             json.dumps({"id": 4, "op": "observe", "request": [1, 2]})]
    out = io.StringIO()

    assert hostctl.main(["serve"], stdin=io.StringIO("\n".join(lines) + "\n"),
                        stdout=out) == 0

    first, *answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first == {"serving": Path(hostctl.__file__).resolve().parents[3].name}
    by_id = {(a["id"], a["code"]): a["answer"] for a in answers if a["id"] is not None}
    assert by_id == {
        (1, 0): {"waited": True}, ("two", 0): {"instances": []},
        (3, 2): {"error": "unknown operation 'frobnicate'",
                 "hint": "one of start, observe, explain, stop, router-start, router-stop, "
                         "haproxy-start, haproxy-write, haproxy-reload, haproxy-stop, "
                         "router-retire"},
        (4, 2): {"error": "the request must be a JSON object", "hint": None}}
    refused = [a for a in answers if a["id"] is None]
    assert [a["answer"]["error"] for a in refused] == [
        "a request line must be a JSON object with an id"] * 2
    order = [a["id"] for a in answers]
    assert order.index("two") < order.index(1)  # answered as done, not as asked
