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

from entrega.routers.embedded.client import EmbeddedRouter  # noqa: E402

__all__ = ["EmbeddedRouter"]
