"""Checks a pretraining run makes before anything runs: the run directory and every split it will read.

Recipe values are range-checked when the recipe is resolved (:func:`gsg_zoo.config.recipes.validate`); the
training split is opened when the run is built. What is only read later, the kNN monitor's
labelled splits (read at the first monitored epoch), is checked here, so that a missing split stops
the run before training rather than after it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType

from ..config.recipes import Recipe
from ..data.registry import get_info, open_split, require_labels


def preflight(recipe: Recipe, out_dir: str | os.PathLike | None) -> None:
    """Raise a clear error now for anything the run would trip over later."""
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    check_monitor_splits(recipe)


def check_out_dir(out: Path) -> None:
    """``--out`` must be a directory (new or existing) that this process can write."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; it must name a run directory (new or existing)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"--out {out}: {existing} is not writable; choose a run directory you can write"
        )


def check_monitor_splits(recipe: Recipe) -> None:
    """The kNN monitor's bank and query splits exist (when the monitor is on: ``monitor.every >= 0``)."""
    dc, mc = recipe.data, recipe.monitor
    if mc.every < 0:
        return
    name, root = mc.dataset or dc.dataset, mc.root or dc.root
    info = get_info(name, pretrain=True)
    if dc.download and info.downloadable and name == dc.dataset:
        return  # the training data's download fetches the dataset's archive, labelled splits included
    for key, split in (("train_split", mc.train_split), ("test_split", mc.test_split)):
        try:
            require_labels(
                info, open_split(info, root, split, **dc.reader_options(), num_images=2), str(root)
            )
        except (FileNotFoundError, ValueError) as err:
            raise FileNotFoundError(
                f"the kNN monitor (monitor.every={mc.every}) reads {name} split {split!r} "
                f"(monitor.{key}) and cannot: {err}. Point monitor.root / monitor.dataset / "
                f"monitor.{key} at labelled images, or turn the monitor off with --set monitor.every=-1"
            ) from err


log = logging.getLogger("gsg_zoo.pretrain")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving; rerun the same command to continue
EXIT_NONFINITE = 65  # EX_DATAERR: the loss became NaN/inf; restarting replays it, so restarts stop at once
NONFINITE_MARKER = "NONFINITE.json"
PREEMPTED_MARKER = "PREEMPTED.json"
LOCK_FILE = ".gsg-run.lock"
STALE_LOCK_S = 15 * 60.0  # a lock of another host not refreshed for this long belongs to a dead job
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is written; exits with :data:`EXIT_PREEMPTED`."""

    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


class StopSignals:
    """SIGTERM / SIGUSR1 set :attr:`requested`; the previous handlers come back on :meth:`restore`."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignals:
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name
        log.warning(
            "%s received: saving at the next check step, then exiting with %d", self.requested, EXIT_PREEMPTED
        )

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


def write_preempted_marker(out: Path, signal_name: str | None, epoch: int, step: int) -> None:
    """Record that the run stopped on a signal after saving at (epoch, step); rerun to continue."""
    info = {
        "signal": signal_name,
        "epoch": epoch,
        "step": step,
        "exit_code": EXIT_PREEMPTED,
        "time": time.time(),
    }
    (out / PREEMPTED_MARKER).write_text(json.dumps(info, indent=2))


def write_nonfinite_marker(out: Path, message: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / NONFINITE_MARKER).write_text(json.dumps({"message": message, "time": time.time()}, indent=2))


def nonfinite_message(out: Path) -> str | None:
    """The error a restarted run stops with when an earlier attempt ended in NaN/inf, else None."""
    marker = out / NONFINITE_MARKER
    if not marker.exists():
        return None
    message = json.loads(marker.read_text()).get("message", "")
    return (
        f"{message}\nThis run stopped on a non-finite loss before, and restarting would replay it: change "
        f"the recipe (e.g. lower optim.lr) and delete {marker} to run again."
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock file in the run directory, held by rank 0 for the whole run."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(mine)
            self.held = True
            return self
        raise RuntimeError(f"could not take the run lock {self.path}")

    def _take_over_if_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text() or "{}")
            age = time.time() - self.path.stat().st_mtime
        except (FileNotFoundError, json.JSONDecodeError):
            owner, age = {}, STALE_LOCK_S + 1  # vanished or half-written: stale
        same_host = owner.get("host") == socket.gethostname()
        if (same_host and not _alive(int(owner.get("pid", -1)))) or (not same_host and age > STALE_LOCK_S):
            log.warning("taking over the stale run lock of %s (pid %s)", owner.get("host"), owner.get("pid"))
            self.path.unlink(missing_ok=True)
            return
        raise RuntimeError(
            f"{self.path.parent} is in use by another job (host {owner.get('host')}, pid {owner.get('pid')}); "
            "two jobs must not write one run directory. Use another --out, or stop that job "
            f"(a lock not refreshed for {STALE_LOCK_S / 60:.0f} min is taken over)"
        )

    def refresh(self) -> None:
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
