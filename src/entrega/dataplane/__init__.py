"""entrega's data plane: the programs that carry traffic and keep instances running.

They run as processes of their own, started detached, so they outlive the controller (even
``kill -9`` of it) and keep serving the last state they were given:

- the embedded router, ``python -m entrega.dataplane.router``: an HTTP/1.1 reverse proxy
  in a supervisor process and its workers, configured through a control socket;
- the instance supervisor, ``python -m entrega.dataplane.instances.supervisor``: the host
  agent that runs, restarts and stops one app instance.
- the log sink, ``python -m entrega.dataplane.logsink``: per-release counters and latencies
  of HAProxy, read from its per-request log (``accesslog.py``).

Layout::

    routes.py reports.py   what crosses the boundary: the route table a router applies,
    proof.py               the counters and restarts it reports, the key it proves itself
                           with to entrega's server (the controller side imports these, and
                           nothing else of the router's insides but its build)
    router.py              the router's entry point (options, supervisor or worker)
    build.py               which build of the HTTP path runs: mypyc-compiled or the .py
    http/                  the request path, compiled by mypyc: every module in it
    process/               the router's processes: supervisor, workers, their link, the
                           shared listeners, restart pacing, summed worker counters
    admin/                 how the router is driven and observed: the control socket, the
                           Prometheus listener, the persisted table
    instances/             the host agent: the instance supervisor, the operations on the
                           instances of one host (host.py) and their command (hostctl.py)
    logsink.py accesslog.py  HAProxy's log sink, and its log line and counters

The data plane imports nothing from the controller side (routers, targets, controller,
service, store, api, config...) nor the libraries only that side needs: import-linter
contracts (pyproject.toml) hold it. The controller drives these processes only through
its adapters, ``routers/embedded.py`` and ``targets/local.py`` (and the server checks the
router's key, ``proof.py``). Loading this package stays cheap: a worker's start time is a
restart's delay.
"""
