"""The router's request path: every module here runs for every proxied request.

That is the rule of this folder, and what makes it the one list of the hot path: every
module in it (but this ``__init__``) is compiled together by mypyc at ``pip install``
(setup.py globs this folder, the Makefile rebuilds when one of them changes,
``entrega.dataplane.build.HOT_PATH`` lists them). A module that is not on the path of a
request, or that mypyc cannot compile, belongs elsewhere in the data plane.

``ENTREGA_PURE_PYTHON=1`` runs the .py files instead of the build; it is decided here,
before any of them loads.
"""

from entrega.dataplane import build

if build.pure_python_requested():
    build.prefer_sources()
