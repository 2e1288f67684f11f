"""Targets: where instances of a release run (local processes today; ssh, containers later)."""
