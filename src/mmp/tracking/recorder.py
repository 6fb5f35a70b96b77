"""A stage's MLflow run kept by a helper process, the recorder, so that MLflow loads beside the stage's work.

Importing MLflow and its SQLite store costs about 2 CPU-seconds of Python in every stage process. On a
thread it competes with the stage for the GIL, and during a fit for the cores that the fit keeps busy:
a 1M-row XGBoost fit ran 3 s longer with it. A recorder process, started as the stage script starts,
imports on the core that the stage's single-threaded start (imports, composing the config, reading,
encoding) leaves idle, then sleeps on its pipe until the stage needs its run (train on 1M rows: 2.3-2.7 s
sooner; prepare about as fast as with a thread).

The stage talks to it in JSON lines: an opening (config and stage), then ``start`` (create the run,
answer its id; the train stage asks during its fit and reads the answer after), ``mirror`` (log the
finished stage with the same mirror function that ``mmp mirror`` replays, then end the run; with
``meanwhile``, the recorder waits for ``continue`` before it logs the late outputs, so the train stage
draws its charts while the model is logged), ``finish`` or ``fail``. The recorder runs the same
:func:`mmp.tracking.stage_run` as an in-process stage does, so the runs are the same either way. If the
stage process dies, the recorder sees its pipe close and ends the run KILLED.

Stages use one when they run in a process that has not loaded MLflow: each stage script (so ``dvc repro``
and ``dvc exp run``) starts its own, and ``mmp train`` starts one *shared* recorder that keeps its three
stages' runs one after the other (MLflow loads once, on the other core, while the stage imports, composes
and reads). Sweeps, and a process that has MLflow loaded already (a notebook, the tests), record in-process.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any

from mmp.errors import Pruned, TrackingError
from mmp.redaction import redact

if TYPE_CHECKING:
    from mmp.config import Config
    from mmp.tracking.runs import MirrorFunction

log = logging.getLogger(__name__)


class RecorderGone(TrackingError):
    """The recorder process stopped before it answered."""


class Recorder:
    """The stage's end of the pipe to its recorder process."""

    def __init__(self, process: subprocess.Popen[bytes], replies: IO[bytes], launched_ms: int, shared: bool) -> None:
        self._process, self._replies = process, replies
        self.launched_ms = launched_ms  # the first stage's start: its run's start time
        self.shared = shared  # it keeps the next stage's run once this one is recorded
        self.closed = False
        self.owed = 0  # mirrors of a shared recorder whose answers are not read yet (see settle)

    @classmethod
    def launch(cls, entry: str, shared: bool = False) -> Recorder | None:
        """Start a recorder process (``python -m entry``, a module that calls :func:`main` with the stages'
        mirror functions), which loads MLflow and then waits to be told its stage (:meth:`open`).

        ``shared``: after a stage's run is recorded, it is handed to the next stage of this process
        (:func:`for_stage`) instead of being closed. None if it cannot start: the stage then records in-process.
        """
        read_end, write_end = os.pipe()
        package_parent = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path}
        launched_ms = int(time.time() * 1000)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", entry, str(write_end)],
                stdin=subprocess.PIPE,
                pass_fds=(write_end,),
                env=env,
            )
        except OSError as exc:
            log.debug("no recorder process (%s); recording in-process", exc)
            os.close(read_end)
            return None
        finally:
            os.close(write_end)
        return cls(process, os.fdopen(read_end, "rb"), launched_ms, shared)

    def open(self, config: Config, stage: str, verbose: bool) -> bool:
        """Tell the recorder its stage and config; False if it has gone (it is then closed)."""
        from mmp.tracking.tags import execution_id

        opening = {
            "config": config.as_dict(),
            "root": str(config.root),
            "overrides": list(config.overrides),
            "stage": stage,
            "started_ms": self.launched_ms,
            "verbose": verbose,
            "execution": execution_id(),  # set after a shared recorder started: it joins the same pipeline run
        }
        try:
            self.send(opening)
        except RecorderGone:
            self.close()
            return False
        return True

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        self.send(message)
        return self.receive()

    def receive(self) -> dict[str, Any]:
        """Wait for the answer to the last command, after those of the mirrors still owed (which come first).

        A failed mirror among those is raised once that answer is read, so that the pipe stays in step.
        """
        failure = self._read_owed()
        answer = self._read()
        if failure is not None:
            raise failure
        return answer

    def settle(self) -> None:
        """Wait for the mirrors still owed: a shared recorder logs a stage while the next one works."""
        if (failure := self._read_owed()) is not None:
            raise failure

    def _read_owed(self) -> TrackingError | None:
        failure = None
        while self.owed:
            self.owed -= 1
            try:
                answer = _answer(self._read())
            except TrackingError as exc:
                failure = failure or exc
                continue
            if warning := answer.get("deferred"):
                if answer.get("fatal"):
                    failure = failure or TrackingError(warning)
                else:
                    log.warning("%s", warning)
        return failure

    def _read(self) -> dict[str, Any]:
        line = self._replies.readline()
        if not line:
            self.close()
            raise RecorderGone(
                f"The MLflow recorder process stopped (exit code {self._process.returncode}) before the run was "
                "recorded; the messages above say why, and --verbose shows more"
            )
        return json.loads(line)

    def send(self, message: dict[str, Any]) -> None:
        """Send one command (or the opening) without waiting."""
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(message).encode() + b"\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RecorderGone("The MLflow recorder process stopped before the run was recorded") from None

    def kill(self) -> None:
        """Stop the process at once (one that holds no run)."""
        with contextlib.suppress(OSError):
            self._process.kill()
        self.close()

    def release(self) -> None:
        """The stage's run is recorded: a shared recorder waits for the next stage, any other one is closed."""
        global _launched
        if self.shared and not self.closed:
            self.launched_ms = int(time.time() * 1000)  # the next stage starts as this one ends
            _launched = self
        else:
            self.close()

    def close(self) -> None:
        """Close the pipe and reap the recorder, which exits as soon as it has answered."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            if self._process.stdin is not None:
                self._process.stdin.close()
        self._replies.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("The MLflow recorder process %d did not exit; stopping it", self._process.pid)
            self._process.kill()
            self._process.wait()


RECORDED_STAGES = ("prepare", "train", "explain")  # the stages that start a recorder early
_launched: Recorder | None = None


def enabled() -> bool:
    return os.environ.get("MMP_RECORDER") != "0"


def launch_early(entry: str, shared: bool = False) -> None:
    """Start the recorder as the command starts, before its config is composed: it loads MLflow meanwhile.

    ``shared``: one recorder for every stage this process runs (``mmp train``), see :meth:`Recorder.launch`.
    """
    global _launched
    if _launched is None and enabled():
        _launched = Recorder.launch(entry, shared)


def settle() -> None:
    """Wait until a shared recorder has logged every stage it was given; raise the first mirror that failed."""
    if _launched is not None:
        _launched.settle()


def discard_unused() -> None:
    """Stop a recorder started early that no stage has used (it holds no run), or a shared one once it has
    logged the stages it was given."""
    global _launched
    recorder, _launched = _launched, None
    if recorder is None:
        return
    if recorder.owed:
        try:
            recorder.settle()
        except TrackingError as exc:  # the command is failing already: say it, do not mask its error
            log.warning("%s", exc)
    recorder.kill()


def for_stage(config: Config, stage: str, entry: str, verbose: bool = False) -> Recorder | None:
    """The recorder for ``stage``: the one started early if any, else a new one; None if turned off
    (``MMP_RECORDER=0``) or if none can start."""
    global _launched
    if not enabled():
        return None
    recorder, _launched = _launched or Recorder.launch(entry), None
    return recorder if recorder is not None and recorder.open(config, stage, verbose) else None


class RecordedRun:
    """What a stage block sees of a run kept by a recorder: ``info`` (``run_id``, ``experiment_id``)."""

    def __init__(self, recorder: Recorder, tags: dict[str, str]) -> None:
        self._recorder, self._tags = recorder, tags
        self._info: SimpleNamespace | None = None
        self._asked = False  # "start" sent, its answer not read yet
        self._ended = False  # recorded (mirrored, finished or failed): the recorder is released

    @property
    def started(self) -> bool:
        return self._info is not None

    @property
    def info(self) -> SimpleNamespace:
        return self.start()

    def begin(self) -> None:
        """Ask for the run without waiting: the recorder creates it while the stage computes."""
        if self._info is None and not self._asked:
            self._recorder.send({"op": "start", "tags": self._tags})
            self._asked = True

    def start(self) -> SimpleNamespace:
        if self._info is None:
            self.begin()
            self._asked = False
            self._info = _run_info(_answer(self._recorder.receive()))
        return self._info

    def mirror(
        self, extras: dict[str, Any], outputs: list[Path], meanwhile: Callable[[], None] | None
    ) -> tuple[str | None, bool]:
        """Mirror the finished stage in the recorder, running ``meanwhile`` here as it does; the warning if the
        store deferred the mirror (else None), and whether the deferral is fatal (a full disk)."""
        command = {
            "op": "mirror",
            "tags": self._tags,
            "extras": extras,
            "outputs": [str(path) for path in outputs],
            "meanwhile": meanwhile is not None,
        }
        if self._asked or self._recorder.shared:
            self.start()  # its answer comes first; a shared recorder is not asked about this run again
        if meanwhile is not None:
            self._recorder.send(command)
            meanwhile()  # on failure the run block's end() tells the recorder, which is waiting for "continue"
            command = {"op": "continue"}
        if self._recorder.shared:  # logged while the next stage works: its answer is read with the next one
            self._recorder.send(command)
            self._recorder.owed += 1
            self._release()
            return None, False
        try:
            answer = _answer(self._recorder.request(command))
        finally:
            self._release()  # the mirror ends the run
        if answer.get("run"):
            self._info = self._info or _run_info(answer)
        return answer.get("deferred"), bool(answer.get("fatal"))

    def end(self, exc: BaseException | None) -> None:
        """End the run: FINISHED, or FAILED/KILLED with the error (a no-op once mirrored)."""
        if self._ended or self._recorder.closed:
            return
        try:
            if self._asked:
                with contextlib.suppress(TrackingError):  # the run could not be created: "fail" tells of it
                    self.start()
                if self._recorder.closed:
                    return
            if exc is None:
                answer = _answer(self._recorder.request({"op": "finish", "tags": self._tags}))
            else:
                from mmp.tracking import failed_status

                command = {
                    "op": "fail",
                    "tags": self._tags,
                    "status": failed_status(exc),
                    "pruned": isinstance(exc, Pruned),
                    "error": " ".join(str(exc).split()),
                }
                answer = self._recorder.request(command)
            if answer.get("run"):
                self._info = self._info or _run_info(answer)
        finally:
            self._release()

    def _release(self) -> None:
        self._ended = True
        self._recorder.release()


def _answer(reply: dict[str, Any]) -> dict[str, Any]:
    if error := reply.get("error"):
        raise TrackingError(error)
    return reply


def _run_info(reply: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(**reply["run"])


# --------------------------------------------------------------------------- the recorder process


class _StageStopped(Exception):
    """The stage failed, was stopped, or its process went away: the run ends with ``status``."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.run_status = status


def _serve(replies: IO[str], mirrors: Callable[[], Mapping[str, MirrorFunction]]) -> None:
    """Record stage runs one after the other, each announced by an opening, until the stage process closes the pipe."""
    for module in ("mlflow", "mlflow.store.tracking.sqlalchemy_store"):
        importlib.import_module(module)
    from mmp.runtime import setup_logging
    from mmp.tracking.tags import EXECUTION_ENV

    commands = (json.loads(line) for line in sys.stdin)
    while (opening := next(commands, None)) is not None:
        setup_logging(opening["verbose"])
        if opening.get("execution"):
            os.environ[EXECUTION_ENV] = opening["execution"]
        if not _record_stage(opening, commands, replies, mirrors):
            return  # the stage process went away


def _record_stage(
    opening: dict[str, Any],
    commands: Iterator[dict[str, Any]],
    replies: IO[str],
    mirrors: Callable[[], Mapping[str, MirrorFunction]],
) -> bool:
    """Keep one stage's run, from its first command to its end; False if the stage process went away first."""
    from mmp import tracking
    from mmp.config import from_dict

    stage = opening["stage"]
    config = from_dict(opening["config"], root=Path(opening["root"]), overrides=tuple(opening["overrides"]))

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    def info(run: tracking.StageRun) -> dict[str, Any]:
        return {"run": {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}} if run.started else {}

    first = next(commands, None)
    if first is None:
        return False  # the stage stopped before its run block (bad data, say): it has no run
    deferred, fatal = None, False
    run = None
    try:
        started_ms = opening["started_ms"]
        with tracking.stage_run(config, stage, lazy=True, started_ms=started_ms, raise_fatal=False) as run:
            for command in itertools.chain([first], commands):
                run.add_tags(command.get("tags", {}))
                op = command["op"]
                if op == "start":
                    try:
                        run.start()
                    except TrackingError as exc:
                        reply({"error": str(exc)})
                        continue
                    reply(info(run))
                elif op == "mirror":
                    mirror_fn = mirrors()[stage]
                    outputs = [Path(path) for path in command["outputs"]]

                    def late_outputs_written() -> None:  # the stage's ``meanwhile``: it says when it is done
                        after = next(commands, None)
                        if after is None:
                            raise _StageStopped("The stage process ended before its run was finished", "KILLED")
                        if after["op"] != "continue":
                            raise _stopped(after)

                    meanwhile = late_outputs_written if command["meanwhile"] else None
                    try:
                        tracking.mirror(config, stage, run, mirror_fn, command["extras"], outputs, meanwhile)
                    except tracking.MirrorDeferred as exc:
                        deferred, fatal = str(exc), exc.fatal
                        raise
                    break
                elif op == "finish":
                    break
                else:
                    raise _stopped(command)
            else:
                raise _StageStopped("The stage process ended before its run was finished", "KILLED")
    except (_StageStopped, Pruned):
        reply(info(run) if run is not None else {})
    except Exception as exc:
        log.debug("recording the %s run failed", stage, exc_info=True)
        reply({"error": redact(" ".join(str(exc).split())) or type(exc).__name__})
    else:
        reply({**info(run), "deferred": deferred, "fatal": fatal} if run is not None else {})
    return True


def _stopped(command: dict[str, Any]) -> Exception:
    """The exception that ends the run as a ``fail`` command says: a pruned search trial, or FAILED/KILLED."""
    if command["pruned"]:
        return Pruned(command["error"])
    return _StageStopped(command["error"], command["status"])


def main(argv: list[str], mirrors: Callable[[], Mapping[str, MirrorFunction]]) -> None:
    """The recorder process: ``argv`` holds the reply pipe's descriptor; ``mirrors()`` maps a stage to its
    mirror function (imported after MLflow, which the recorder loads first)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stage, which tells us how it ended
    with os.fdopen(int(argv[0]), "w") as replies, contextlib.suppress(BrokenPipeError):
        _serve(replies, mirrors)
    # The run is ended and answered for: skip the interpreter's teardown (0.5 s with MLflow loaded),
    # which the stage would otherwise wait for.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
