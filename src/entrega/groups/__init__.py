"""Pure release-group core: ``advance(spec, state, observed, now=...) -> GroupTransition``.

A release group carries releases of several apps through the environments as one: it
enters an environment whole and leaves it whole. This package decides what the group
coordinator does next (which member to deploy, promote or revert, where); the member
rollouts themselves are :mod:`entrega.rollouts`' business, run by each app's controller.
Nothing here awaits, sleeps, reads the clock or logs, so the decisions are table-tested
and a restarted coordinator resumes any group from the store.
"""

from __future__ import annotations

from entrega.groups.advance import advance, unapplied
from entrega.groups.model import GroupSpec, GroupState, GroupTransition, ObservedGroup
from entrega.groups.order import layers

__all__ = ["GroupSpec", "GroupState", "GroupTransition", "ObservedGroup", "advance", "layers",
           "unapplied"]
