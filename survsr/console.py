"""What a long job prints, and where the rest goes.

A pipeline or the demo shows one line per stage, one Ray Data progress bar per dataset, warnings, errors and
the summary; everything at INFO (ours, Ray's, Ray Data's, Ray Train's) goes to ``RUN/logs/driver.log``.
Actors log at ``$SURVSR_WORKER_LOG_LEVEL`` (workers of an embedded Ray inherit the driver's environment), so
their per-face lines stay in Ray's own worker logs instead of streaming to the console; ``-v`` restores
everything.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose INFO lines are the job's progress: one per stage start/finish, and the final summary.
PROGRESS_LOGGERS = ("survsr.pipeline", "survsr.demo")
WORKER_LEVEL_ENV = "SURVSR_WORKER_LOG_LEVEL"
_quiet = False


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name in PROGRESS_LOGGERS


def quiet_console(log_dir: str | Path) -> Path:
    """Route INFO logs to ``log_dir/driver.log`` and keep only progress, warnings and errors on the console.
    Returns the log file's path. Ray started after this keeps worker output in its own session logs
    (``log_to_driver`` off; errors still reach the driver as exceptions), whose folder driver.log names."""
    global _quiet
    _quiet = True
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "driver.log"
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.addFilter(_ConsoleFilter())
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        fh = logging.FileHandler(path)
        fh.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(fh)
    os.environ.setdefault(WORKER_LEVEL_ENV, "WARNING")
    # Importing Ray Data attaches Ray's console handlers (to "ray", "ray.data", ...): import first, then
    # turn those handlers down; the file above keeps their INFO lines.
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_operator_progress_bars = False  # one bar per dataset, not one per operator
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve"):
        lg = logging.getLogger(name)
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.WARNING)
        if lg.handlers and not lg.propagate:  # Ray's own handlers end the chain: give the file its lines too
            lg.addHandler(next(h for h in root.handlers if isinstance(h, logging.FileHandler)))
    return path


def quiet() -> bool:
    """Whether this process asked for a quiet console (then Ray's worker output stays out of it)."""
    return _quiet


def worker_log_level() -> int:
    """The level an actor configures for itself (INFO unless a quiet job said otherwise)."""
    return getattr(logging, os.environ.get(WORKER_LEVEL_ENV, "INFO").upper(), logging.INFO)
