"""The instance supervisor: the host agent that keeps one app instance running.

``python -m entrega.dataplane.instances.supervisor`` (``supervisor.py``), started detached
by the local target (``targets/local.py``) once per instance; it imports nothing of the
router (an import-linter contract holds it): the two programs have only the data plane's
rule in common, outliving the controller.
"""
