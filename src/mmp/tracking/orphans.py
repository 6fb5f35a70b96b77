"""Runs left RUNNING by a process that is gone (``kill -9`` of a stage and its recorder, the OOM killer).

Every run records the process that owns it: host, pid and that process's start time (so a reused pid is
not taken for the owner). Opening the store ends the runs of this host whose owner is gone as KILLED,
with a tag that says why, so ``mmp runs`` never shows a dead run as RUNNING.
"""

from __future__ import annotations

import logging
import os
import socket
from functools import cache

from mmp.tracking.tags import TAG_PREFIX

log = logging.getLogger(__name__)

OWNER_HOST = f"{TAG_PREFIX}owner.host"
OWNER_PID = f"{TAG_PREFIX}owner.pid"
OWNER_STARTED = f"{TAG_PREFIX}owner.started"
OWNER_PIDNS = f"{TAG_PREFIX}owner.pidns"  # containers on one host (even of one hostname) see different pids
ORPHANED = f"{TAG_PREFIX}orphaned"
ERROR = f"{TAG_PREFIX}error"


@cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()[:8]
    except OSError:
        return ""


@cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_started(pid: int) -> str | None:
    """An id of when process ``pid`` started (boot id and start time in clock ticks); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else None


def owner_tags() -> dict[str, str]:
    """The tags naming this process as a run's owner."""
    pid = os.getpid()
    tags = {
        OWNER_HOST: socket.gethostname(),
        OWNER_PIDNS: _pid_namespace(),
        OWNER_PID: str(pid),
        OWNER_STARTED: process_started(pid) or "",
    }
    return {tag: value for tag, value in tags.items() if value}


def is_alive(pid: int, started: str = "") -> bool:
    """True if process ``pid`` runs, and is the one that started at ``started`` (when both are known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if started:
        current = process_started(pid)
        if current is not None and current != started:
            return False  # the pid was reused by a later process
    return True


_reaped: set[str] = set()  # "<store uri> <experiment id>" already looked at by this process


def reap(experiment_id: str, *, again: bool = False) -> list[str]:
    """End as KILLED the RUNNING runs of ``experiment_id`` owned by a gone process of this host (one search
    per experiment and process, unless ``again``: a search that saw one of its workers die); return their ids.
    Never fails: a best-effort tidy-up."""
    import mlflow

    key = f"{mlflow.get_tracking_uri()} {experiment_id}"
    if key in _reaped and not again:
        return []
    _reaped.add(key)
    try:
        return _reap(experiment_id)
    except Exception:
        log.debug("looking for orphaned runs failed", exc_info=True)
        return []


def owner_gone(tags: dict[str, str]) -> str | None:
    """Why the process that ``tags`` (:func:`owner_tags`) name is gone, if it ran on this host and has ended;
    None if it runs, or ran elsewhere (another host's processes cannot be seen from here)."""
    host = socket.gethostname()
    if tags.get(OWNER_HOST) != host or tags.get(OWNER_PIDNS, "") != _pid_namespace():
        return None
    try:
        pid = int(tags.get(OWNER_PID, ""))
    except ValueError:
        return None
    if is_alive(pid, tags.get(OWNER_STARTED, "")):
        return None
    return f"process {pid} on {host} that ran it is gone (killed, or out of memory)"


def _reap(experiment_id: str) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient()
    host = socket.gethostname()
    owner = {OWNER_HOST: host, OWNER_PIDNS: _pid_namespace()}
    if "'" in host:
        return []  # not a name a filter can quote; never seen
    where = [f"tags.`{tag}` = '{value}'" for tag, value in owner.items() if value]
    runs = client.search_runs(
        [experiment_id], " and ".join(["attributes.status = 'RUNNING'", *where]), max_results=1000
    )
    ended = []
    for run in runs:
        tags = run.data.tags
        why = owner_gone(tags)
        if why is None:
            continue
        client.set_tag(run.info.run_id, ORPHANED, why)
        if ERROR not in tags:
            client.set_tag(run.info.run_id, ERROR, f"The run was left RUNNING: the {why}; marked KILLED")
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("Marked run %s KILLED: the %s", run.info.run_id, why)
        ended.append(run.info.run_id)
    return ended


def forget_orphaned(run_id: str) -> None:
    """A run reopened by ``mmp mirror`` after it was ended as an orphan: drop the orphan's tags (its error)."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = client.get_run(run_id).data.tags
    if ORPHANED in tags:
        client.delete_tag(run_id, ORPHANED)
        if tags.get(ERROR, "").startswith("The run was left RUNNING"):
            client.delete_tag(run_id, ERROR)
