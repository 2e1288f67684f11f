"""The words the store, the controller, the API and the CLI share: rollout phases, event
kinds, deploy request and notification statuses.

Each is a ``StrEnum``: a member *is* its string, so the values in the store's rows, in
webhook payloads and in the API's JSON are the same strings they always were (the store
has existing rows; the JSON is an interface), while the code names them once, here,
instead of repeating literals that a typo silently breaks. This module sits below the
store, which queries by these values, and below the pure rollout core, which decides the
phases.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a rollout stands; ``rollouts.advance`` moves it."""

    PENDING = "pending"            # created; nothing started yet
    STARTING = "starting"          # the new release's instances start and warm up
    PROGRESSING = "progressing"    # canary steps run
    VERIFYING = "verifying"        # blue-green: preview under verification
    PAUSED = "paused"              # waiting for `promote` (or `abort`)
    SCALING_DOWN = "scaling_down"  # blue-green: switched; old release kept warm
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"    # traffic back on stable, new release stopped
    FAILED = "failed"              # the new release never became ready

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


#: Phases a rollout never leaves; any other phase is "in progress" (one per environment).
TERMINAL_PHASES = (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)


class EventKind(StrEnum):
    """The ``kind`` of an event in the append-only log (audit, notifications, DORA).

    Webhooks are chosen by these values (``notify[].webhook.events`` in entrega.yaml), so
    they are an interface as much as the stored rows are.
    """

    RELEASE = "release"                        # a release was created
    ROLLOUT = "rollout"                        # a rollout was requested
    STEP = "step"                              # the state machine moved (its message)
    COMMAND = "command"                        # promote / abort from a user
    TRAFFIC = "traffic"                        # the router's table was set
    PROMOTED = "promoted"                      # a rollout succeeded
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    ANALYSIS = "analysis"
    STOPPED = "stopped"                        # a release's instances were stopped
    INSTANCE_RESTARTED = "instance_restarted"  # an instance crashed and was restarted
    ROUTER_RESTARTED = "router_restarted"
    ADOPTED = "adopted"                        # a restarted controller found what ran
    ERROR = "error"                            # an action failed; it is retried
    QUEUED = "queued"                          # a deploy waits behind a running rollout
    FORCED = "forced"                          # a deploy skipped the pipeline's order
    APPROVAL_NEEDED = "approval_needed"
    APPROVED = "approved"
    SUPERSEDED = "superseded"                  # a waiting deploy replaced by a newer one
    RELEASED = "released"                      # the pipeline moved a release on
    PRUNED = "pruned"                          # retention deleted an artifact
    CONFIG_RELOADED = "config_reloaded"        # entrega.yaml reloaded: applied, waiting
    CONFIG_REFUSED = "config_refused"          # a reload refused the file (why, where)
    CONFIG_APPLIED = "config_applied"          # a waiting router change was applied
    GROUP = "group"                            # a release group moved (its message)


#: What ends a rollout in the event log, by the phase it ended in.
FINAL_EVENT = {Phase.SUCCEEDED: EventKind.PROMOTED, Phase.ROLLED_BACK: EventKind.ROLLED_BACK,
               Phase.FAILED: EventKind.FAILED}


class RequestStatus(StrEnum):
    """Where a request to deploy a release to an environment stands."""

    QUEUED = "queued"                        # waits for the running rollout to end
    AWAITING_APPROVAL = "awaiting_approval"  # waits at a manual gate
    STARTED = "started"                      # its rollout was created
    SUPERSEDED = "superseded"                # a newer request replaced it
    CANCELLED = "cancelled"


#: Requests that still wait for their turn (or for an approval).
WAITING = (RequestStatus.QUEUED, RequestStatus.AWAITING_APPROVAL)


class NotificationStatus(StrEnum):
    """A webhook in the outbox."""

    PENDING = "pending"  # to be sent (again) at ``next_attempt_at``
    SENT = "sent"
    FAILED = "failed"    # gave up after ``max_attempts``
