"""The audit log: one JSON line per job in ``RUN_DIR/audit.jsonl`` (time, command, arguments, config hash,
inputs, outputs, outcome), failures included.

``provenance.append_audit`` writes one line; ``audited`` wraps a whole job so that the line is written
however the job ends (ok, error with its message, interrupted) and carries the hashes of the inputs read
and the outputs written. Times live only here, never in the outputs, so outputs stay byte-reproducible.

    with audited(out_dir, "ingest", vars(args), cfg_hash, inputs=videos) as job:
        ...
        job.add_output(out_dir / "faces.parquet")
        job.extra["faces"] = n
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from survsr.provenance import append_audit, now_iso, sha256_file

AUDIT_FILE = "audit.jsonl"


def _file_entry(path: str | os.PathLike, hash_files: bool) -> dict[str, Any]:
    p = Path(path)
    entry: dict[str, Any] = {"path": str(p)}
    if p.is_file():
        entry["sha256"] = sha256_file(p) if hash_files else None
        entry["bytes"] = p.stat().st_size
    elif p.is_dir():
        entry["dir"] = True
    elif "://" not in str(path):
        entry["missing"] = True
    return entry


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items() if not callable(v)}
    if isinstance(obj, (list, tuple, set)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


@dataclass
class AuditJob:
    """Handed to the ``with`` body: record outputs and extra facts; set ``outcome`` for a partial result."""

    outputs: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None

    def add_output(self, *paths: str | os.PathLike) -> None:
        self.outputs.extend(str(p) for p in paths)

    def add_outputs(self, paths: Iterable[str | os.PathLike]) -> None:
        self.add_output(*paths)


@contextlib.contextmanager
def audited(run_dir: str | os.PathLike, command: str, arguments: Any, config_hash: str | None,
            inputs: Iterable[str | os.PathLike] = (), *, hash_files: bool = True) -> Iterator[AuditJob]:
    """Append the job's audit line to ``run_dir/audit.jsonl`` when the block ends, however it ends.

    The exception (if any) is re-raised after logging; the outcome is ``ok`` (or ``job.outcome``),
    ``error: <Type>: <message>``, or ``interrupted``. Input and output files are hashed (``hash_files``)
    so the log alone shows which bytes went in and came out.
    """
    inputs = [str(p) for p in inputs]
    started = now_iso()
    t0 = time.monotonic()
    job = AuditJob()
    outcome = "ok"
    try:
        yield job
        outcome = job.outcome or "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    except BaseException as exc:  # noqa: BLE001 - logged, then re-raised unchanged
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        outcome = f"error: {type(exc).__name__}: {msg}"[:2000]
        raise
    finally:
        record = {
            "started": started,
            "duration_s": round(time.monotonic() - t0, 3),
            "command": command,
            "arguments": _json_safe(arguments),
            "config_hash": config_hash,
            "inputs": [_file_entry(p, hash_files) for p in inputs],
            "outputs": [_file_entry(p, hash_files) for p in job.outputs],
            "outcome": outcome,
            "pid": os.getpid(),
        }
        if job.extra:
            record["extra"] = _json_safe(job.extra)
        append_audit(run_dir, record)


def read_audit(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All audit records of a run directory, oldest first (a torn last line, if any, is skipped)."""
    path = Path(run_dir) / AUDIT_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
