"""entrega's own data plane: an HTTP/1.1 reverse proxy running as a process of its own.

``python -m entrega.routers.embedded`` runs it; :class:`EmbeddedRouter` (client.py) is what
the controller uses to start, adopt, configure and stop it. The process outlives the
controller and keeps serving its last routes (persisted in ``--state``).

Its hot path is compiled by mypyc when installed; ``build`` tells which build runs, and
``ENTREGA_PURE_PYTHON=1`` runs the .py files instead (decided here, before they load).
"""

from entrega.routers.embedded import build

if build.pure_python_requested():
    build.prefer_sources()

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from entrega.routers.embedded.client import EmbeddedRouter

__all__ = ["EmbeddedRouter"]


def __getattr__(name: str) -> object:
    # Lazily: the router's own processes (``python -m``, its supervisor and workers) load
    # this package too, and the controller's client and its httpx would add most of their
    # start time (a second on a busy machine), and a worker's start is a restart's delay.
    if name == "EmbeddedRouter":
        from entrega.routers.embedded.client import EmbeddedRouter

        return EmbeddedRouter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
