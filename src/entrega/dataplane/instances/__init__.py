"""The host agent: what keeps app instances running on a host, and drives them there.

- ``supervisor.py``: ``python -m entrega.dataplane.instances.supervisor``, started detached
  once per instance; it keeps the app running while the controller comes and goes;
- ``host.py``: the instances of one environment on one host (ports, start or adopt,
  observe, explain, stop with drain), blocking, with the plain records of ``wire.py``;
  ``lookup.py``: finding a supervisor by pid and command line, quoting its logs;
- ``hostctl.py``: ``python -m entrega.dataplane.instances.hostctl OPERATION``, the same
  operations as one command each (JSON on stdin and stdout), for remote hosts;
- ``hostrouter.py``, ``hosthaproxy.py``: a fleet host's own router (embedded, or HAProxy
  and its log sink), started, adopted and stopped for the controller.

The local target (``targets/local.py``) calls ``host.py`` in process. None of these imports
the router, nor anything outside the standard library and entrega's stdlib-only modules
(import-linter contracts hold it): a remote host has only Python and entrega's wheel.
"""
