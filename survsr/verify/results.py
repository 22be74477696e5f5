"""What ``survsr verify`` says about an output: a status (the worst of its own checks and its parents'),
the problems behind it (file and field), and the exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERIFIED = "verified"
MODIFIED = "modified"
SOURCE_MISSING = "source-missing"
UNVERIFIABLE = "unverifiable"
# Worst first: the status of an output is the worst of its own checks and its parents'.
_SEVERITY = {MODIFIED: 3, SOURCE_MISSING: 2, UNVERIFIABLE: 1, VERIFIED: 0}
EXIT_CODES = {VERIFIED: 0, MODIFIED: 1, SOURCE_MISSING: 3, UNVERIFIABLE: 4}
EXIT_USAGE = 2


class VerifyUsageError(ValueError):
    """A PATH that does not exist or holds nothing to verify."""


@dataclass
class Problem:
    status: str          # modified | source-missing | unverifiable
    file: str            # the file whose bytes or record disagree (or that is missing)
    field: str           # the field that disagrees, e.g. "sha256 (faces.parquet column sha256)"
    message: str = ""
    expected: Any = None
    actual: Any = None

    def describe(self) -> str:
        s = f"{self.file}: {self.field}"
        if self.message:
            s += f": {self.message}"
        if self.expected is not None or self.actual is not None:
            s += f" (expected {self.expected}, found {self.actual})"
        return s


@dataclass
class Result:
    path: str
    status: str
    problems: list[Problem] = field(default_factory=list)
    kind: str | None = None
    source: str | None = None
    frame_index: int | None = None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED

    @property
    def file(self) -> str | None:
        return self.problems[0].file if self.problems else None

    @property
    def field(self) -> str | None:
        return self.problems[0].field if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "status": self.status, "kind": self.kind, "source": self.source,
            "frame_index": self.frame_index, "sha256": self.sha256,
            "problems": [p.__dict__ for p in self.problems],
        }


@dataclass
class _Node:
    """One file in the graph of records: its own problems and the parents its provenance names."""

    path: Path
    own: list[Problem] = field(default_factory=list)
    parents: list["_Node"] = field(default_factory=list)
    doc: dict[str, Any] | None = None
    sha: str | None = None
    recorded: bool = False  # some manifest or sidecar records this file's SHA-256
