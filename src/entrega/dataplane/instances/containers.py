"""The ``podman`` runtime: a release's instances as containers on this host.

The same operations as :class:`~.host.HostInstances` (start or adopt, observe, explain,
stop with drain) and the same records (:mod:`.wire`), so the ssh target and the
controller treat a container like a supervised process; only how an instance runs
differs. What the supervisor does for a process, podman does for a container: it keeps
running when the controller and SSH go away, and ``--restart always`` restarts it when
it exits (``RestartCount`` is what the crash-loop rule counts).

The release's unpacked artifact holds the image as an OCI or docker archive,
:data:`IMAGE_ARCHIVE` (``podman save --format oci-archive``, ``docker save``). Its image
id (the digest of its config) is read from the archive itself, so the image is loaded
(``podman load``) once per host and content, and a container always runs the image of
its release's bytes, never whatever a tag points at now. The container runs the image's
own entrypoint and command (``run.command`` is not used: an image says how it runs),
on the host's network, and must listen on ``$HOST:$PORT``.

Podman is the record: nothing is kept on disk beside it. A container carries labels
(:data:`LABEL_PREFIX` ``app``, ``environment``, ``version``, ``instance``, ``port`` and
``home``, the state directory, which tells apart several entrega "hosts" sharing one
podman, as the test fleet's do) and is found by them; its name,
``entrega-<app>-<environment>-<version>-<n>-<home hash>``, makes a second start of the
same instance impossible. A stopped instance is removed: observe lists the containers
that exist, running or between two restarts.

Standard library only, like the rest of the host agent: ``podman`` is run as a program.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from entrega.dataplane.instances.host import HostInstances
from entrega.dataplane.instances.lookup import STDERR_TAIL_LINES, check_name
from entrega.dataplane.instances.wire import InstanceReport, ObservedInstance, ReleaseSpec
from entrega.errors import TargetError
from entrega.net import Endpoint
from entrega.procenv import minimal_env

#: The image inside a release's artifact.
IMAGE_ARCHIVE = "image.tar"
LABEL_PREFIX = "entrega."
PODMAN = "podman"
#: Every podman command but load and stop: a healthy podman answers in well under this.
PODMAN_TIMEOUT_S = 60.0
#: Loading an image copies all its layers into podman's storage.
LOAD_TIMEOUT_S = 600.0
#: Slack on top of ``drain_s`` for podman to kill a container and clean it up.
STOP_GRACE_S = 15.0

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]")


class HostContainers(HostInstances):
    """The containers of ``app`` in ``environment`` on this host (``state_dir`` holds only
    the start lock). Every method blocks and is idempotent."""

    def __init__(self, *, app: str, environment: str, state_dir: Path,
                 address: str = "127.0.0.1", podman: str = PODMAN) -> None:
        super().__init__(app=app, environment=environment, state_dir=state_dir,
                         address=address)
        self.podman = podman
        self.home = str(state_dir.resolve())

    # -- naming ------------------------------------------------------------------------

    def container_name(self, version: str, instance: int | str) -> str:
        home = hashlib.sha256(self.home.encode()).hexdigest()[:8]
        name = f"entrega-{self.app}-{self.environment}-{version}-{instance}-{home}"
        return _NOT_IN_NAMES.sub("_", name)

    def _labels(self, version: str | None = None) -> dict[str, str]:
        labels = {"app": self.app, "environment": self.environment, "home": self.home}
        if version is not None:
            labels["version"] = version
        return {LABEL_PREFIX + k: v for k, v in labels.items()}

    # -- podman ------------------------------------------------------------------------

    def _podman(self, *args: str, timeout_s: float = PODMAN_TIMEOUT_S,
                env: dict[str, str] | None = None, doing: str) -> str:
        """Run podman; its stdout. A failure is a TargetError quoting podman's own words."""
        try:
            done = subprocess.run([self.podman, *args], capture_output=True, text=True,
                                  timeout=timeout_s, env=env or minimal_env(),
                                  stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            raise TargetError(f"cannot {doing}: podman is not installed on this host",
                              hint="install podman (Debian: apt-get install podman)"
                              ) from None
        except subprocess.TimeoutExpired:
            raise TargetError(f"cannot {doing}: podman did not answer within "
                              f"{timeout_s:g} s", hint="is the host overloaded?") from None
        if done.returncode != 0:
            said = " ".join(done.stderr.split())[-600:] or f"exit status {done.returncode}"
            raise TargetError(f"cannot {doing}: podman says: {said}")
        return done.stdout

    def _inspect(self, version: str | None) -> list[dict[str, Any]]:
        """``podman inspect`` of this environment's containers (of ``version`` only)."""
        filters = [f"--filter=label={k}={v}" for k, v in self._labels(version).items()]
        ids = self._podman("ps", "--all", "--quiet", "--no-trunc", *filters,
                           doing=f"list the containers of {self.app} in {self.environment}"
                           ).split()
        if not ids:
            return []
        try:
            found = json.loads(self._podman("container", "inspect", *ids,
                                            doing="inspect containers"))
        except TargetError:  # one was removed meanwhile: one at a time, skipping it
            found = []
            for container_id in ids:
                try:
                    found += json.loads(self._podman("container", "inspect", container_id,
                                                     doing="inspect a container"))
                except TargetError:
                    continue
        wanted = self._labels(version)
        return [c for c in found
                if wanted.items() <= (c.get("Config", {}).get("Labels") or {}).items()]

    # -- the image ---------------------------------------------------------------------

    def _image(self, release: ReleaseSpec) -> str:
        """The release's image id, loaded into podman if it is not there yet."""
        archive = Path(release.path) / IMAGE_ARCHIVE
        where = f"{self.app} {release.version}"
        if not archive.is_file():
            raise TargetError(
                f"cannot start {where} in {self.environment} with podman: its artifact has "
                f"no {IMAGE_ARCHIVE}",
                hint=f"put the image in the artifact as {IMAGE_ARCHIVE} "
                     "(podman save --format oci-archive -o image.tar IMAGE)")
        image_id = image_id_of(archive)
        if image_id is None:
            raise TargetError(
                f"cannot start {where}: its {IMAGE_ARCHIVE} is not an OCI or docker image "
                "archive", hint="save it with podman save --format oci-archive, or docker save")
        if not self._image_exists(image_id):
            self._podman("load", "--quiet", "--input", str(archive), timeout_s=LOAD_TIMEOUT_S,
                         doing=f"load the image of {where}")
            if not self._image_exists(image_id):
                raise TargetError(f"loading the image of {where} gave another image than "
                                  f"its archive names ({image_id[:19]})")
        return image_id

    def _image_exists(self, image_id: str) -> bool:
        try:
            self._podman("image", "exists", image_id, doing="look for an image")
        except TargetError:
            return False
        return True

    # -- start -------------------------------------------------------------------------

    def start(self, release: ReleaseSpec) -> list[Endpoint]:
        """Run the release's containers, or adopt the running ones (same ports, same ids).

        Returns once podman has started every container; whether the app answers is the
        controller's business (its health checks)."""
        self.check_startable(release)
        image_id = self._image(release)
        endpoints = []
        with self._start_lock():
            existing = {_label(c, "instance"): c for c in self._inspect(release.version)}
            claimed: set[int] = set()
            for instance in range(release.instances):
                port = self._start_instance(release, image_id, instance,
                                            existing.get(str(instance)), claimed)
                claimed.add(port)
                endpoints.append(Endpoint(self.address, port, str(instance)))
        return endpoints

    def _start_instance(self, release: ReleaseSpec, image_id: str, instance: int,
                        container: dict[str, Any] | None, claimed: set[int]) -> int:
        """The instance's port, its container adopted, started again or run anew."""
        where = self._where_instance(release.version, instance)
        previous = None
        if container is not None:
            previous = _int_or_none(_label(container, "port"))
            if _same_image(container.get("Image"), image_id) and previous is not None:
                if _is_running(container):
                    return previous
                # Between two restarts, or left exited (podman does not bring containers
                # back after a reboot without its systemd unit): started again, it keeps
                # its port and its restart count.
                try:
                    self._podman("start", container["Id"], doing=f"start {where} again")
                    return previous
                except TargetError:
                    pass
            # Of other bytes (the same version re-created elsewhere), or unstartable.
            self._podman("rm", "--force", "--time", "0", container["Id"],
                         doing=f"replace {where}")
        port = self._claim_port(release, instance, previous, claimed)
        try:
            self._run(release, image_id, instance, port)
        except TargetError:
            # podman may have created it before failing: the next start runs it anew.
            self._remove_quietly(self.container_name(release.version, instance))
            raise
        return port

    def _remove_quietly(self, name: str) -> None:
        try:
            self._podman("rm", "--force", "--ignore", "--time", "0", name,
                         doing=f"remove {name}")
        except TargetError:
            pass

    def _run(self, release: ReleaseSpec, image_id: str, instance: int, port: int) -> None:
        env = {**release.env, "PORT": str(port), "HOST": self.address,
               "ENTREGA_APP": self.app, "ENTREGA_VERSION": release.version,
               "ENTREGA_ENVIRONMENT": self.environment, "ENTREGA_INSTANCE": str(instance)}
        labels = {**self._labels(release.version), LABEL_PREFIX + "instance": str(instance),
                  LABEL_PREFIX + "port": str(port)}
        args = ["run", "--detach", "--name", self.container_name(release.version, instance),
                "--network", "host", "--restart", "always"]
        args += [f"--label={k}={v}" for k, v in labels.items()]
        # ``-e NAME`` takes the value from podman's own environment: the app's variables
        # (run.env may hold credentials) are never on a command line.
        args += [f"--env={name}" for name in env]
        self._podman(*args, image_id, env={**minimal_env(), **env},
                     doing=f"start {self._where_instance(release.version, instance)}")

    def _held_ports(self) -> set[int]:
        """Ports of this environment's containers (running or between two restarts)."""
        return {port for c in self._inspect(None)
                if (port := _int_or_none(_label(c, "port"))) is not None}

    # -- observe and explain -------------------------------------------------------------

    def observe(self, version: str | None = None) -> list[ObservedInstance]:
        """Every container of this environment (of ``version`` only, if given).

        A container that exists is alive: running, or between two restarts (status
        ``backoff``); a stopped one is removed."""
        if version is not None:
            check_name("version", version)
        observed = []
        for container in self._sorted(self._inspect(version)):
            state = container.get("State") or {}
            running = _is_running(container)
            observed.append(ObservedInstance(
                version=_label(container, "version"), instance=_label(container, "instance"),
                port=_int_or_none(_label(container, "port")) or 0, alive=True,
                status="running" if running else "backoff",
                pid=(state.get("Pid") or None) if running else None,
                supervisor_pid=state.get("ConmonPid") or 0,
                restarts=int(container.get("RestartCount") or 0),
                started_at=_unix(state.get("StartedAt")),
                last_exit_code=None if running else state.get("ExitCode"),
                directory=container.get("Name") or ""))
        return observed

    def explain(self, version: str) -> list[InstanceReport]:
        """What podman knows of the release's containers: restarts, exit code, log tail."""
        check_name("version", version)
        reports = []
        for container in self._sorted(self._inspect(version)):
            state = container.get("State") or {}
            restarts = int(container.get("RestartCount") or 0)
            running = _is_running(container)
            # podman clears State.ExitCode when it restarts a container: a running one's
            # last exit is in its "died" events.
            code = state.get("ExitCode") if not running else \
                self._last_exit_code(container) if restarts else None
            if not running:
                note = (f"the container exited with code {code} and is being restarted "
                        f"({restarts} restarts so far)")
            elif restarts:
                note = f"the container has been restarted {restarts} times"
            else:
                note = ""
            reports.append(InstanceReport(
                instance=_label(container, "instance"),
                exits=restarts + (0 if running else 1), restarts=restarts,
                last_exit_code=code, note=note, stderr=self._log_tail(container)))
        return reports

    def _last_exit_code(self, container: dict[str, Any]) -> int | None:
        """The exit code of the container's last exit, from podman's events (None when
        podman keeps no events here)."""
        try:
            done = subprocess.run(
                [self.podman, "events", "--stream=false", "--filter",
                 f"container={container['Id']}", "--filter", "event=died",
                 "--format", "{{.ContainerExitCode}}"],
                capture_output=True, text=True, timeout=PODMAN_TIMEOUT_S, env=minimal_env(),
                stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        codes = done.stdout.split()
        return _int_or_none(codes[-1]) if done.returncode == 0 and codes else None

    def _log_tail(self, container: dict[str, Any]) -> str:
        """The container's last lines of output, formatted to end an error message."""
        try:
            done = subprocess.run(
                [self.podman, "logs", "--tail", str(STDERR_TAIL_LINES), container["Id"]],
                capture_output=True, text=True, timeout=PODMAN_TIMEOUT_S, env=minimal_env(),
                stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        # podman logs writes the app's stdout and stderr to its own, in order.
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        if done.returncode != 0 or not lines:
            return ""
        return "; the container's log ends with:\n" + "\n".join(
            f"  {line}" for line in lines[-STDERR_TAIL_LINES:])

    # -- stop --------------------------------------------------------------------------

    def stop(self, version: str, *, drain_s: float) -> list[str]:
        """SIGTERM every container of the release, SIGKILL after ``drain_s`` (rounded up
        to whole seconds, podman's unit), then remove them. Returns the instances that
        were running. Idempotent: a release without containers is left as it is."""
        check_name("version", version)
        containers = self._sorted(self._inspect(version))
        if not containers:
            return []
        ids = [c["Id"] for c in containers]
        seconds = str(math.ceil(drain_s))
        # One command: podman stops them side by side, the release takes one drain.
        self._podman("stop", "--ignore", "--time", seconds, *ids,
                     timeout_s=drain_s + STOP_GRACE_S,
                     doing=f"stop {self.app} {version} in {self.environment}")
        self._podman("rm", "--force", "--ignore", "--time", "0", *ids,
                     doing=f"remove the containers of {self.app} {version}")
        return [_label(c, "instance") for c in containers if _is_running(c)]

    # -- helpers -----------------------------------------------------------------------

    def _where_instance(self, version: str, instance: int) -> str:
        return (f"{self.app} {version} instance {instance} in {self.environment} "
                f"(container {self.container_name(version, instance)})")

    @staticmethod
    def _sorted(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(containers, key=lambda c: (_label(c, "version"),
                                                 len(_label(c, "instance")),
                                                 _label(c, "instance")))


def image_id_of(archive: Path) -> str | None:
    """The image id (``sha256:`` + the digest of its config) an OCI or docker archive
    holds, read without loading it; None when it is neither (or holds no single image)."""
    try:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
            if "index.json" in names:  # OCI: index -> manifest -> config
                index = _json_member(tar, "index.json")
                manifests = index.get("manifests") if isinstance(index, dict) else None
                if not isinstance(manifests, list) or len(manifests) != 1:
                    return None
                manifest = _json_member(tar, _blob(manifests[0].get("digest")))
                config = manifest.get("config") if isinstance(manifest, dict) else None
                digest = config.get("digest") if isinstance(config, dict) else None
                return digest if _is_digest(digest) else None
            if "manifest.json" in names:  # docker save: the config file is named by it
                manifest = _json_member(tar, "manifest.json")
                if not isinstance(manifest, list) or len(manifest) != 1:
                    return None
                config_file = os.path.basename(str(manifest[0].get("Config", "")))
                digest = "sha256:" + config_file.removesuffix(".json")
                return digest if _is_digest(digest) else None
    except (OSError, tarfile.TarError, ValueError, KeyError, AttributeError):
        return None
    return None


def _json_member(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(name)
    return json.loads(member.read(1 << 20))


def _blob(digest: object) -> str:
    if not _is_digest(digest):
        raise ValueError("not a digest")
    return "blobs/sha256/" + str(digest).removeprefix("sha256:")


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", value) is not None


def _label(container: dict[str, Any], name: str) -> str:
    labels = (container.get("Config") or {}).get("Labels") or {}
    return str(labels.get(LABEL_PREFIX + name, ""))


def _is_running(container: dict[str, Any]) -> bool:
    return (container.get("State") or {}).get("Status") == "running"


def _same_image(found: object, image_id: str) -> bool:
    return isinstance(found, str) and found.removeprefix("sha256:") == image_id.removeprefix(
        "sha256:")


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _unix(timestamp: object) -> float | None:
    """Podman's RFC 3339 time (nanoseconds, a zone) in Unix seconds; None if unset."""
    if not isinstance(timestamp, str) or timestamp.startswith("0001-"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", timestamp)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    moment = datetime.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)
