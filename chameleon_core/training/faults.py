"""Fail fast across processes: one failing process ends the whole job within seconds, its error printed once.

Why this exists: a collective (FSDP's all-gather, a barrier, DCP's planning) waits for every process. A process that
raises and stops calling collectives leaves the others waiting in theirs until the process group's timeout -- or
forever, in a barrier inside a ``finally``. So, in a job of several processes:

1. :class:`FailFast`, a context manager around a stage's work, catches the error on the process where it happens,
   prints it once with the rank, the stage and the step, records it in the job's store (the c10d key-value store
   every process of the group already shares) and leaves the process at once (``os._exit``), running no further
   collective and no ``finally`` that could.
2. :class:`Watchdog`, a daemon thread started with the process group, polls that record every half second. A process
   that finds another's failure leaves at once with the same exit code: its main thread may be stuck inside a
   collective, which Python cannot interrupt. The watchdog also keeps a heartbeat: a process killed without a word
   (SIGKILL, the out-of-memory killer, a frozen node) stops beating; rank 0 notices within
   ``CHAMELEON_HEARTBEAT_TIMEOUT`` seconds (default 120) and records the failure for it, the others watch rank 0's
   heartbeat, and a process that can no longer reach the store (its host died) leaves too. On gloo a dead peer
   also breaks the collective at once; the heartbeat is what ends an NCCL job, whose collectives would wait.
3. An error that every process raises identically (a bad config value, prepare's report of bad rows, a broken
   resume pointer, a failed checkpoint write that DCP reports everywhere) is marked with :func:`raised_everywhere`:
   one rank prints it, the others leave quietly, all with the same exit code.

Exit codes: 2 for an error the user can fix from its message (:func:`is_user_error`: bad data, a missing file, a
full disk, a NaN loss), 1 for an internal error (printed with its traceback), 130 for Ctrl-C.

With one process nobody waits: the error propagates unchanged to the caller (the command line's error policy), with
the stage and step added as a note (:pep:`678`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_ENV = "CHAMELEON_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_TIMEOUT_S = 120.0
"""Seconds without a heartbeat before a process counts as dead. Generous: the heartbeat thread needs the GIL, and a
few calls hold it for seconds (writing a 10 GB safetensors export)."""
POLL_S = 0.5
QUIET_WAIT_S = 5.0
"""How long a process that meets an error every process meets waits for the reporting rank's record before it
reports the error itself (the processes disagreed)."""
ACK_WAIT_S = 5.0
"""How long a failing process waits for the others to see its record before it leaves (rank 0 may host the store)."""
STORE_LOST_POLLS = 4
"""Consecutive failed store calls (2 s) after which a process concludes that the job's store is gone."""

_PREFIX = "chameleon_fault/"
_ABORT = _PREFIX + "abort"
_FAILURES = _PREFIX + "failures"
_ACKS = _PREFIX + "acks"

_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.ENOENT, errno.EISDIR, errno.ENOTDIR}
_LOST_PEER_TEXT = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout",
                   "NCCL communicator was aborted", "remote process exited")


class TrainingError(ValueError):
    """An error the user can act on: the message says what went wrong, the value, and the fix (no traceback)."""


def is_user_error(e: BaseException) -> bool:
    """Errors whose message is the whole story: bad data or config (ValueError and its subclasses, which include
    the data and checkpoint errors), missing or unwritable files, a full disk."""
    if isinstance(e, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return True
    return isinstance(e, OSError) and e.errno in _USER_ERRNOS


def is_lost_peer(e: BaseException) -> bool:
    """A collective failed because another process went away (gloo sees the closed socket at once)."""
    names = {t.__name__ for t in type(e).__mro__}
    if names & {"DistNetworkError"}:
        return True
    return isinstance(e, RuntimeError) and any(t in str(e) for t in _LOST_PEER_TEXT)


def exit_code(e: BaseException) -> int:
    if isinstance(e, KeyboardInterrupt):
        return 130
    return 2 if is_user_error(e) else 1


def raised_everywhere(e: BaseException, reporter: int = 0) -> BaseException:
    """Mark ``e`` as raised identically on every process: only rank ``reporter`` prints it. Returns ``e``."""
    e.chameleon_reporter = reporter  # type: ignore[attr-defined]
    return e


def describe(e: BaseException) -> str:
    """The log's text for ``e``: the message of a user error, ``Type: message`` otherwise."""
    text = str(e).strip() or type(e).__name__
    return text if is_user_error(e) else f"{type(e).__name__}: {text}"


# -------------------------------------------------------------------------------------------------------------------
# What the process is doing (for messages): set by FailFast, read by the watchdog; what to finish before leaving
# -------------------------------------------------------------------------------------------------------------------

_exit_hooks: list[Callable[[bool], None]] = []


def add_exit_hook(hook: Callable[[bool], None]) -> None:
    """Run ``hook(failing)`` before this process leaves because of a failure (``failing``: this process raised the
    error; False when it follows another's). The checkpointer uses it to finish committing a save that is complete."""
    if hook not in _exit_hooks:
        _exit_hooks.append(hook)


def remove_exit_hook(hook: Callable[[bool], None]) -> None:
    if hook in _exit_hooks:
        _exit_hooks.remove(hook)


def run_exit_hooks(failing: bool) -> None:
    for hook in list(_exit_hooks):
        try:
            hook(failing)
        except Exception as e:  # leaving must not fail
            logger.debug("exit hook failed: %s", e)

_context: list[tuple[str, Callable[[], str]]] = []


def current_activity() -> str:
    """``"sft at step 3 of 6"`` for the innermost :class:`FailFast`, or ``"setup"``."""
    if not _context:
        return "setup"
    stage, where = _context[-1]
    try:
        return f"{stage} at {where()}"
    except Exception:  # a message must never fail
        return stage


# -------------------------------------------------------------------------------------------------------------------
# The watchdog
# -------------------------------------------------------------------------------------------------------------------


def heartbeat_timeout() -> float:
    raw = os.environ.get(HEARTBEAT_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_HEARTBEAT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise TrainingError(f"{HEARTBEAT_TIMEOUT_ENV}={raw!r} must be a number of seconds > 0 (default "
                            f"{DEFAULT_HEARTBEAT_TIMEOUT_S:g}); unset it or give e.g. 120")
    return value


class Watchdog:
    """Watches the job's store for another process's failure, keeps this process's heartbeat, and watches peers'.

    Rank 0 watches every other rank's heartbeat (and records a silent death for it); the others watch rank 0's.
    Heartbeats are counters (``store.add``), compared with this process's own clock, so clocks of different nodes
    never meet.
    """

    def __init__(self, store: Any, rank: int, world_size: int, *, poll_s: float = POLL_S,
                 stale_s: float | None = None) -> None:
        self.store, self.rank, self.world = store, rank, world_size
        self.poll_s = poll_s
        self.stale_s = heartbeat_timeout() if stale_s is None else stale_s
        self._stop = threading.Event()
        self._beats: dict[int, tuple[int, float]] = {}
        self._thread = threading.Thread(target=self._run, name="chameleon-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before a normal shutdown, when rank 0's store may go away first)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5 * self.poll_s)

    # -- what a failing process does --------------------------------------------------------------------------------

    def publish(self, record: dict[str, Any]) -> None:
        """Record a failure for every process (the first one recorded is the one the others report)."""
        try:
            if self.store.add(_FAILURES, 1) == 1:
                self.store.set(_ABORT, json.dumps(record))
        except Exception as e:  # the store is gone too: the others will notice that
            logger.debug("could not record the failure in the store: %s", e)

    def wait_for_acks(self, timeout: float = ACK_WAIT_S) -> None:
        """Wait until every other process has seen the record (or ``timeout``): if this process hosts the store,
        leaving earlier would leave the others a lost store rather than the failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.store.add(_ACKS, 0) >= self.world - 1:
                    return
            except Exception:
                return
            time.sleep(0.05)

    def ack(self) -> None:
        """Tell the failing process this one has seen its record (it may host the store and leave after)."""
        try:
            self.store.add(_ACKS, 1)
        except Exception:
            pass

    def failure_record(self) -> dict[str, Any] | None:
        """Another process's failure record, if there is one."""
        try:
            if not self.store.check([_ABORT]):
                return None
            record = json.loads(self.store.get(_ABORT))
        except Exception:
            return None
        return record if record.get("rank") != self.rank else None

    # -- the thread ---------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        lost = 0
        while not self._stop.wait(self.poll_s):
            try:
                self.store.add(f"{_PREFIX}beat/{self.rank}", 1)
                if self.store.check([_ABORT]):
                    record = json.loads(self.store.get(_ABORT))
                    if record.get("rank") != self.rank:
                        self._follow(record)
                self._check_peers()
                lost = 0
            except Exception as e:  # noqa: BLE001 - any store failure counts; several in a row mean it is gone
                if self._stop.is_set():
                    return
                lost += 1
                if lost >= STORE_LOST_POLLS:
                    logger.error("rank %d (%s): lost the job's store (%s); another process has died (its host, "
                                 "or the node running torchrun's rendezvous); stopping", self.rank,
                                 current_activity(), e)
                    run_exit_hooks(False)
                    hard_exit(1)

    def _check_peers(self) -> None:
        peers = range(1, self.world) if self.rank == 0 else (0,)
        now = time.monotonic()
        for peer in peers:
            count = int(self.store.add(f"{_PREFIX}beat/{peer}", 0))
            seen, since = self._beats.get(peer, (-1, now))
            if count != seen:
                self._beats[peer] = (count, now)
            elif now - since > self.stale_s:
                reason = (f"rank {peer} stopped responding (no heartbeat for {now - since:.0f} s): it was killed, "
                          "froze, or ran out of host memory, and printed nothing")
                self.publish({"rank": peer, "code": 1, "stage": "", "where": "", "reason": reason})
                logger.error("rank %d (%s): %s; stopping the job (%s=%g s)", self.rank, current_activity(),
                             reason, HEARTBEAT_TIMEOUT_ENV, self.stale_s)
                run_exit_hooks(False)
                hard_exit(1)

    def _follow(self, record: dict[str, Any]) -> None:
        what = record.get("reason") or f"rank {record.get('rank')} failed ({record.get('where') or 'see its output'})"
        logger.error("rank %d (%s): stopping: %s", self.rank, current_activity(), what)
        self.ack()
        run_exit_hooks(False)
        hard_exit(int(record.get("code", 1)))


_watchdog: Watchdog | None = None


def start_watchdog(store: Any, rank: int, world_size: int) -> Watchdog | None:
    """Start the process's watchdog once (several processes only)."""
    global _watchdog
    if world_size > 1 and _watchdog is None:
        _watchdog = Watchdog(store, rank, world_size).start()
    return _watchdog


def stop_watchdog() -> None:
    global _watchdog
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None


def hard_exit(code: int) -> None:
    """Leave the process now, after flushing the logs: no ``finally``, no atexit hook, no collective."""
    try:
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# -------------------------------------------------------------------------------------------------------------------
# The guard
# -------------------------------------------------------------------------------------------------------------------


class FailFast:
    """``with FailFast(rank, world_size, "sft", where=lambda: "step 3 of 6"):`` around a stage's work.

    On an exception with several processes: print it once (rank, stage, where, message; the traceback for an
    internal error), call ``on_failure(e, where)`` (e.g. a metrics record), record it for the others, and leave with
    :func:`exit_code`. With one process: add the stage and place as a note and let it propagate.
    """

    def __init__(self, rank: int, world_size: int, stage: str, *, where: Callable[[], str] = lambda: "setup",
                 on_failure: Callable[[BaseException, str], None] | None = None) -> None:
        self.rank, self.world, self.stage = rank, world_size, stage
        self.where, self.on_failure = where, on_failure

    def __enter__(self) -> FailFast:
        _context.append((self.stage, self.where))
        return self

    def __exit__(self, exc_type: Any, e: BaseException | None, tb: Any) -> bool:
        try:
            return self._handle(e)
        finally:  # after the handling, so that the watchdog's messages still say where the process was
            _context.pop()

    def _handle(self, e: BaseException | None) -> bool:
        if e is None or isinstance(e, SystemExit) or getattr(e, "chameleon_handled", False):
            return False
        e.chameleon_handled = True  # type: ignore[attr-defined] - an outer FailFast leaves it alone
        try:
            where = self.where()
        except Exception:
            where = "?"
        if self.world == 1:
            if self.on_failure is not None:
                self._call_on_failure(e, where)
            run_exit_hooks(True)
            if hasattr(e, "add_note"):
                e.add_note(f"({self.stage} stopped at {where})")
            return False
        self._fail(e, where)
        return False  # not reached

    def _call_on_failure(self, e: BaseException, where: str) -> None:
        try:
            self.on_failure(e, where)  # type: ignore[misc]
        except Exception as hook_error:  # never hide the real error behind the hook's
            logger.debug("failure hook failed: %s", hook_error)

    def _fail(self, e: BaseException, where: str) -> None:
        dog = _watchdog
        code = exit_code(e)
        reporter = getattr(e, "chameleon_reporter", None)
        if reporter is not None and reporter != self.rank:
            run_exit_hooks(True)  # every process meets this error: each lets the save in flight finish
            if dog is None or self._wait_for_record(dog, QUIET_WAIT_S) is not None:
                logger.warning("rank %d (%s at %s): stopping; rank %d reports the error", self.rank, self.stage,
                               where, reporter)
                if dog is not None:
                    dog.ack()
                hard_exit(code)
            reporter = None  # the reporter did not meet it after all: this process reports it
        if is_lost_peer(e) and dog is not None:
            record = self._wait_for_record(dog)
            if record is not None:  # the cause is another process's failure, already reported by it
                dog._follow(record)
            message = (f"lost contact with another process during a collective: it stopped without a message "
                       f"(killed, out of memory, or crashed; see its output) ({describe(e)})")
            logger.error("%s failed on rank %d of %d at %s: %s", self.stage, self.rank, self.world, where, message)
        elif is_user_error(e) or isinstance(e, KeyboardInterrupt):
            logger.error("%s failed on rank %d of %d at %s: %s", self.stage, self.rank, self.world, where,
                         describe(e))
        else:
            logger.error("%s failed on rank %d of %d at %s: %s", self.stage, self.rank, self.world, where,
                         describe(e), exc_info=(type(e), e, e.__traceback__))
        if self.on_failure is not None:
            self._call_on_failure(e, where)
        run_exit_hooks(True)  # before the others learn of the failure: they would stop a save that can still finish
        if dog is not None:
            dog.publish({"rank": self.rank, "code": code, "stage": self.stage,
                         "where": f"{self.stage} at {where}", "reason": ""})
            dog.wait_for_acks()
        hard_exit(code)

    @staticmethod
    def _wait_for_record(dog: Watchdog, seconds: float = 1.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            record = dog.failure_record()
            if record is not None:
                return record
            time.sleep(0.05)
        return None


def append_failure_record(metrics_file: Path, step: int, rank: int, e: BaseException, where: str,
                          extra: dict[str, Any] | None = None) -> None:
    """Append ``{"step", "failed", "rank", "where", "error", ...}`` to a run's ``metrics.jsonl``."""
    record = {"step": step, "failed": True, "rank": rank, "where": where, "error": describe(e)[:2000], **(extra or {})}
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    with metrics_file.open("a") as f:
        f.write(json.dumps(record) + "\n")
