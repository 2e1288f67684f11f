"""entrega's own data plane: an HTTP/1.1 reverse proxy running as a process of its own.

``python -m entrega.routers.embedded`` runs it; :class:`EmbeddedRouter` (client.py) is what
the controller uses to start, adopt, configure and stop it. The process outlives the
controller and keeps serving its last routes (persisted in ``--state``).
"""

from entrega.routers.embedded.client import EmbeddedRouter

__all__ = ["EmbeddedRouter"]
