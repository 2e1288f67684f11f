"""The reference side of the fleet benchmark (bench/fleet.py): the same delivery by Ansible.

What a team without entrega runs: ``ansible-playbook`` (ansible-core, the ``bench``
extra) with a playbook that, host by host in batches of a quarter of the fleet
(``serial: 25%``, ``forks: 10``, SSH pipelining on, connections kept open between runs
with ControlPersist as Ansible does by default), copies the artifact tarball, unpacks it
into a new release directory, switches a ``current`` symlink, restarts the app (the old
process stopped by its pidfile and waited for, the new one started with nohup/setsid on
the host's address and port) and waits for its health URL (the ``uri`` module, retried
every 0.1 s). Every file is written at run time into a temporary directory: the
inventory (each host's address, sshd port, login, key; the host's ``python3``), the
``ansible.cfg`` and the playbook. Host keys are checked against the test fleet's
``known_hosts``, as entrega checks them: nothing is trusted on first use.

The app listens on one fixed port per host, so the restart leaves a gap on that host
(nothing answers between the old process's exit and the new one's bind): that is what
a playbook of this shape gives its users, and the benchmark counts it
(``ansible_failed_requests``) with requests sent straight to the hosts' app ports,
round-robin, the way a load balancer without health checks would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How long one playbook run may take before the benchmark gives up on it (s).
PLAYBOOK_TIMEOUT_S = 600

PLAYBOOK = """\
- name: deliver a release, a quarter of the fleet at a time
  hosts: app
  serial: "{{ batch }}"
  gather_facts: false
  vars:
    release_dir: "{{ base_dir }}/releases/{{ version }}"
    tarball: "{{ base_dir }}/artifacts/{{ version }}.tar.gz"
  tasks:
    - name: copy the artifact
      ansible.builtin.copy:
        src: "{{ artifact }}"
        dest: "{{ tarball }}"
        mode: "0644"
    - name: make the release directory
      ansible.builtin.file:
        path: "{{ release_dir }}"
        state: directory
        mode: "0755"
    - name: unpack the artifact
      ansible.builtin.unarchive:
        src: "{{ tarball }}"
        dest: "{{ release_dir }}"
        remote_src: true
    - name: switch current to the new release
      ansible.builtin.file:
        src: "{{ release_dir }}"
        dest: "{{ base_dir }}/current"
        state: link
        force: true
    - name: restart the app (stop the old by its pidfile, start the new)
      ansible.builtin.shell: |
        set -e
        if [ -f app.pid ]; then
          old=$(cat app.pid)
          kill -TERM "$old" 2>/dev/null || true
          # gone, or a zombie nobody reaps yet; SIGKILL after 10 s
          n=0
          while [ -e "/proc/$old" ] && [ "$(cut -d' ' -f3 "/proc/$old/stat" 2>/dev/null)" != Z ]; do
            n=$((n + 1)); [ "$n" -gt 200 ] && kill -KILL "$old" 2>/dev/null
            sleep 0.05
          done
        fi
        cd current
        HOST={{ ansible_host }} PORT={{ app_port }} PIDFILE={{ base_dir }}/app.pid \\
          nohup setsid {{ ansible_python_interpreter }} app.py \\
          >{{ base_dir }}/app.log 2>&1 </dev/null &
      args:
        chdir: "{{ base_dir }}"
    - name: wait for its health URL
      ansible.builtin.uri:
        url: "http://{{ ansible_host }}:{{ app_port }}/healthz"
        status_code: 200
      register: health
      until: health.status == 200
      retries: 100
      delay: 0.1
"""

ANSIBLE_CFG = """\
[defaults]
forks = 10
host_key_checking = True
gathering = explicit
retry_files_enabled = False
local_tmp = {root}/local-tmp

[ssh_connection]
pipelining = True
control_path_dir = {root}/cp
"""


@dataclass(frozen=True)
class AnsibleHost:
    """One host as the inventory lists it; ``app_port`` is where the app listens there."""

    name: str
    address: str
    ssh_port: int
    user: str
    base_dir: str
    app_port: int


def ansible_playbook() -> str:
    """The ``ansible-playbook`` beside this interpreter (the venv the bench extra filled)."""
    beside = Path(sys.executable).with_name("ansible-playbook")
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if found is None:
        raise SystemExit("ansible-playbook is not installed: pip install -e '.[bench]' "
                         "(ansible-core)")
    return found


def write_project(root: Path, hosts: list[AnsibleHost], *, identity_file: Path,
                  known_hosts: Path, host_python: str) -> Path:
    """Inventory, ansible.cfg and playbook under ``root``; returns the playbook's path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cp").mkdir(exist_ok=True)
    ssh_args = (f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
                "-o StrictHostKeyChecking=yes")
    inventory: dict[str, Any] = {"app": {
        "hosts": {h.name: {"ansible_host": h.address, "ansible_port": h.ssh_port,
                           "ansible_user": h.user, "base_dir": h.base_dir,
                           "ansible_remote_tmp": f"{h.base_dir}/.ansible-tmp",
                           "app_port": h.app_port} for h in hosts},
        "vars": {"ansible_ssh_private_key_file": str(identity_file),
                 "ansible_ssh_common_args": ssh_args,
                 "ansible_python_interpreter": host_python}}}
    # JSON is YAML: Ansible's yaml inventory plugin reads .json files as they are
    (root / "inventory.json").write_text(json.dumps(inventory, indent=1))
    (root / "ansible.cfg").write_text(ANSIBLE_CFG.format(root=root))
    playbook = root / "deliver.yml"
    playbook.write_text(PLAYBOOK)
    return playbook


def run_playbook(playbook: Path, *, artifact: Path, version: str, batch: str = "25%"
                 ) -> float:
    """Run the playbook for one release, ``batch`` hosts at a time (its ``serial``);
    returns its wall time (s), Ansible's own start included (what its user waits for).
    A failed run ends the benchmark with its log."""
    root = playbook.parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
           "ANSIBLE_HOME": str(root / "home"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
           "ANSIBLE_NOCOLOR": "1"}
    log = root / f"ansible-{version}.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        done = subprocess.run(
            [ansible_playbook(), "-i", str(root / "inventory.json"), str(playbook),
             "-e", json.dumps({"artifact": str(artifact), "version": version,
                               "batch": batch})],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, timeout=PLAYBOOK_TIMEOUT_S, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ansible-playbook failed delivering {version} (exit "
                         f"{done.returncode}):\n{log.read_text()[-3000:]}")
    return elapsed
