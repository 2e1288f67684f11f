"""Verification tells "the release answered wrongly" (fail at once) from "the release
could not be reached" (try again until the check's timeout), on real sockets: a listener
that appears late, a router without a route yet, a router killed and started again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from entrega.config import HttpCheck, VerifyStep
from entrega.controller.verification import run_verification
from entrega.net import Endpoint, free_port
from entrega.routers.base import Routes
from entrega.routers.embedded import EmbeddedRouter

pytestmark = pytest.mark.real


class Listener:
    """A real HTTP/1.1 listener on loopback answering from a script of (status, body);
    the last answer repeats."""

    def __init__(self, port: int, answers: list[tuple[int, str]]) -> None:
        self.port = port
        self.answers = answers
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            status, body = self.answers[min(self.requests, len(self.answers) - 1)]
            self.requests += 1
            data = body.encode()
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (status, len(data), data))
            await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def listening(answers: list[tuple[int, str]], *, after_s: float = 0.0,
                    port: int | None = None) -> AsyncIterator[Listener]:
    listener = Listener(port or free_port(), answers)

    async def start_later() -> None:
        await asyncio.sleep(after_s)
        await listener.start()

    if not after_s:
        await listener.start()
    starting = asyncio.create_task(start_later() if after_s else asyncio.sleep(0))
    try:
        yield listener
    finally:
        await starting
        await listener.stop()


def check(path: str = "/healthz", *, body: str | None = "ok", timeout_s: float = 5.0,
          status: int = 200) -> list[VerifyStep]:
    return [VerifyStep(http=HttpCheck(path=path, expect_status=status, expect_body=body,
                                      timeout_s=timeout_s))]


async def test_a_listener_that_appears_late_is_waited_for() -> None:
    async with listening([(200, "ok")], after_s=0.8) as listener:
        result = await run_verification(check(), base_url=f"http://127.0.0.1:{listener.port}",
                                        version="v2")
    assert result.passed, result.detail
    assert result.duration_s >= 0.7 and listener.requests == 1


@pytest.mark.parametrize(("answers", "expected"), [
    pytest.param([(404, "no")], "answered wrongly: status 404, expected 200", id="status"),
    pytest.param([(200, "nope")], "answered wrongly: the body does not contain 'ok'",
                 id="body"),
    pytest.param([(500, "boom")], "answered wrongly: status 500", id="5xx-of-the-release"),
])
async def test_a_wrong_answer_fails_at_once(answers: list[tuple[int, str]],
                                            expected: str) -> None:
    async with listening(answers) as listener:
        result = await run_verification(check(), base_url=f"http://127.0.0.1:{listener.port}",
                                        version="v2", via_router=True)
    assert not result.passed
    assert expected in result.detail
    assert listener.requests == 1 and result.duration_s < 1.0


async def test_an_unreadable_answer_is_a_wrong_answer_not_a_crash() -> None:
    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n"
                     b"Connection: close\r\n\r\nnot gzip!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbled, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_verification(check(), base_url=f"http://127.0.0.1:{port}",
                                        version="v2", via_router=True)
    finally:
        server.close()
        await server.wait_closed()
    assert not result.passed and "the release answered wrongly" in result.detail
    assert result.duration_s < 1.0


async def test_a_503_is_the_releases_own_answer_on_an_instance_address() -> None:
    async with listening([(503, "warming up")]) as listener:
        result = await run_verification(check(), base_url=f"http://127.0.0.1:{listener.port}",
                                        version="v2", via_router=False)
    assert not result.passed and "answered wrongly: status 503" in result.detail
    assert listener.requests == 1


async def test_router_errors_are_retried_until_the_release_answers() -> None:
    answers = [(503, "no release is routable on this listener"), (502, "no endpoint"),
               (200, "ok")]
    async with listening(answers) as listener:
        result = await run_verification(check(), base_url=f"http://127.0.0.1:{listener.port}",
                                        version="v2", via_router=True)
    assert result.passed, result.detail
    assert listener.requests == 3


async def test_an_unreachable_release_fails_after_the_timeout_saying_so() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    result = await run_verification(check(timeout_s=1.0), base_url=f"http://127.0.0.1:{port}",
                                    version="v2")
    took = time.monotonic() - started
    assert not result.passed
    assert "could not reach the release" in result.detail and "within 1s" in result.detail
    assert "cannot connect" in result.detail
    assert "Error" not in result.detail  # words, not Python class names
    assert took >= 1.0  # the whole timeout was given: the last try is at the deadline


async def test_a_router_that_keeps_answering_503_fails_as_unreachable() -> None:
    async with listening([(503, "no release is routable on this listener")]) as listener:
        result = await run_verification(check(timeout_s=1.0),
                                        base_url=f"http://127.0.0.1:{listener.port}",
                                        version="v2", via_router=True)
    assert not result.passed
    assert "could not reach" in result.detail
    assert "the router answered 503 (no release is routable" in result.detail
    assert listener.requests > 2


# -- through a real embedded router --------------------------------------------------------


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[EmbeddedRouter]:
    router = EmbeddedRouter(name="verify", listen=f"127.0.0.1:{free_port()}",
                            preview_listen=None, state_dir=tmp_path)
    await router.ensure_running()
    try:
        yield router
    finally:
        await router.shutdown()
        await router.close()


async def test_verification_through_a_router_whose_route_comes_late(
        router: EmbeddedRouter) -> None:
    async with listening([(200, "ok")]) as release:
        routes = Routes(backends={"v2": (Endpoint("127.0.0.1", release.port, "v2-0"),)},
                        weights={"v2": 100})

        async def route_later() -> None:
            await asyncio.sleep(0.6)
            await router.set_routes(routes)

        routing = asyncio.create_task(route_later())
        result = await run_verification(check(), base_url=f"http://{router.listen}",
                                        version="v2", via_router=True)
        await routing
    assert result.passed, result.detail
    assert result.duration_s >= 0.5


async def test_verification_survives_a_router_restart(router: EmbeddedRouter) -> None:
    async with listening([(200, "ok")]) as release:
        await router.set_routes(Routes(
            backends={"v2": (Endpoint("127.0.0.1", release.port, "v2-0"),)},
            weights={"v2": 100}))
        pid = router.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while router.socket_path.exists() and await _answers(router):
            await asyncio.sleep(0.01)

        async def restart_later() -> None:
            await asyncio.sleep(0.3)
            await router.ensure_running()  # it reloads its last routes

        restarting = asyncio.create_task(restart_later())
        result = await run_verification(check(), base_url=f"http://{router.listen}",
                                        version="v2", via_router=True)
        await restarting
    assert result.passed, result.detail
    assert release.requests >= 1


async def _answers(router: EmbeddedRouter) -> bool:
    try:
        await router.get_routes()
    except Exception:  # noqa: BLE001 - any failure means it is gone
        return False
    return True


async def test_a_verification_command_gets_no_controller_secret(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A check is the user's program: it sees ENTREGA_URL/VERSION, the minimal environment
    and what run.inherit_env names, never the controller's webhook secret."""
    monkeypatch.setenv("ENTREGA_WEBHOOK_SECRET", "s3cret-of-the-controller")
    monkeypatch.setenv("SMOKE_TARGET", "named-in-inherit-env")
    out = tmp_path / "env.txt"
    step = VerifyStep(command=f"env > {out}")
    result = await run_verification([step], base_url="http://127.0.0.1:9", version="v7",
                                    inherit_env=("SMOKE_TARGET",))
    assert result.passed, result.detail
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert "ENTREGA_WEBHOOK_SECRET" not in seen
    assert "s3cret-of-the-controller" not in out.read_text()
    assert seen["SMOKE_TARGET"] == "named-in-inherit-env"
    assert seen["ENTREGA_URL"] == "http://127.0.0.1:9" and seen["ENTREGA_VERSION"] == "v7"
    assert "PATH" in seen
