"""Listening sockets of the router's workers (``--workers N``, SO_REUSEPORT), held by the
supervisor.

Each worker gets listening sockets of its own on the same address, and the kernel spreads
new connections over them by a hash of the client's address and port, so no worker is a
bottleneck and none accepts for another.

SO_REUSEPORT would also let us share the port with *anything* else of the same user: a
stale router, or a second entrega pointed at the same address. So before the shared
sockets are made, the address is bound once without SO_REUSEPORT: that bind fails with
EADDRINUSE if any socket holds the port, as a plain ``bind`` does.
(The probe is released before the shared sockets bind: a socket without SO_REUSEPORT
would keep them out. The gap is microseconds, and a process that takes the port in it
makes our bind fail, not share.)

The supervisor keeps its copy of every worker's sockets for its own whole life: a
restarted worker gets the same sockets back, and connections that queued on them while
it was down are accepted, not refused or reset.
"""

from __future__ import annotations

import socket

from entrega.net import parse_address

#: connections that may wait for a worker to accept them (while one is replaced, too)
BACKLOG = 4096
#: Logged when an address is busy and tried again: a router started beside the one it
#: replaces (a changed configuration) waits so for the addresses they share, and the
#: controller reads this line to know it may stop the old one now.
BUSY_PORT_NOTICE = "is busy: trying it again"


def bind_shared(address: str, workers: int, *, join: bool = False
                ) -> list[list[socket.socket]]:
    """Listening sockets on ``address`` for each of ``workers`` workers (several per
    worker when the host resolves to several addresses, as ``create_server`` does).

    Raises ValueError for a malformed address and OSError (EADDRINUSE...) when the
    address is taken by anyone, ourselves with SO_REUSEPORT included. ``join`` skips that
    probe: the router this one replaces holds the address (a changed configuration), and
    the kernel spreads connections over both until it closes its sockets, so none is
    refused meanwhile.
    """
    host, port = parse_address(address)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    targets = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
    for family, sockaddr in targets if not join else ():
        with _socket(family, reuse_port=False) as probe:
            probe.bind(sockaddr)
    made: list[list[socket.socket]] = []
    try:
        for _ in range(workers):
            own: list[socket.socket] = []
            made.append(own)
            for family, sockaddr in targets:
                sock = _socket(family, reuse_port=True)
                own.append(sock)
                sock.bind(sockaddr)
                sock.listen(BACKLOG)
    except OSError:
        close_all(made)
        raise
    return made


def close_all(groups: list[list[socket.socket]]) -> None:
    for group in groups:
        for sock in group:
            sock.close()


def _socket(family: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # as create_server(reuse_address=True): rebinding over TIME_WAIT is fine, a live
        # listener still makes bind fail
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
