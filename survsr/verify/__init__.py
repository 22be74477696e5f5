"""``survsr verify PATH...``: check outputs against their provenance, back to the source video and frame.

PATH may be an output file (PNG, or any file described by a JSON sidecar such as an enhanced video or a
report), a manifest (``*.parquet`` with ``sha256`` columns), a sidecar (any JSON object with a top-level
``survsr:provenance`` document), or a directory (searched recursively for all of these). Each output gets
one status:

* ``verified``       - every recorded hash matches, the chain reaches the source video, whose SHA-256
  matches and which has the recorded frame (at the recorded time, with the box inside the frame);
* ``modified``       - some bytes or records disagree; the report names the file and the field;
* ``source-missing`` - the chain cannot be followed: the source video (or an intermediate parent) is gone;
* ``unverifiable``   - not a survsr output: no provenance document, or no manifest/sidecar records the
  file's own SHA-256 (its bytes could be swapped undetected).

Exit codes: 0 all verified, 1 any modified, 3 any source-missing (none modified), 4 any unverifiable
(none modified or source-missing), 2 usage error (no such path, nothing to verify). See docs/provenance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterable

from survsr.stage import Command
from survsr.provenance import PROVENANCE_KEY
from survsr.verify.results import (EXIT_CODES, EXIT_USAGE, MODIFIED, SOURCE_MISSING, UNVERIFIABLE, VERIFIED,
                                   _SEVERITY, Problem, Result, VerifyUsageError)
from survsr.verify.verifier import _CACHE_DIRS, VIDEO_EXTS, Verifier, _is_temp, _resolve

__all__ = ["VERIFIED", "MODIFIED", "SOURCE_MISSING", "UNVERIFIABLE", "EXIT_CODES", "Problem", "Result",
           "VerifyUsageError", "verify_paths", "verify_run", "unchecked_files", "exit_code", "COMMAND"]

log = logging.getLogger(__name__)


def _expand(paths: Iterable[str | os.PathLike], v: Verifier) -> list[Path]:
    targets: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise VerifyUsageError(f"{raw}: no such file or directory")
        if p.is_dir():
            found = 0
            for m in sorted(p.rglob("*.parquet")):
                if not any(_is_temp(Path(c)) for c in m.relative_to(p).parts):
                    targets += v.load_manifest(m)
                    found += 1
            for f in sorted(p.rglob("*")):
                # hidden/temp files and directories (".x", "x.tmp") and caches are not outputs
                rel_parts = f.relative_to(p).parts
                if not f.is_file() or any(_is_temp(Path(c)) or c in _CACHE_DIRS for c in rel_parts[:-1]) \
                        or _is_temp(f):
                    continue
                if f.suffix.lower() == ".png" or f.suffix.lower() in VIDEO_EXTS:
                    targets.append(f)
                elif f.suffix == ".json":
                    targets += v.load_sidecar(f)
            if not targets and not found:
                raise VerifyUsageError(f"{raw}: no outputs, manifests or sidecars to verify")
        elif p.suffix == ".parquet":
            targets += v.load_manifest(p)
        elif p.suffix == ".json":
            files = v.load_sidecar(p)
            if not files:
                raise VerifyUsageError(f"{raw}: not a survsr sidecar (no {PROVENANCE_KEY} document)")
            targets += files
        else:
            targets.append(p)
    seen: dict[Path, None] = {}
    for t in targets:
        seen.setdefault(_resolve(t), None)
    return list(seen)


_AUDIT_NAME = "audit.jsonl"


def unchecked_files(v: Verifier, paths: Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    """Every file under the directories in ``paths`` whose bytes verify did not check, with the reason, so
    that a clean exit code is never read as "every file here is what it was"."""
    out: list[dict[str, str]] = []
    for raw in paths:
        root = Path(raw)
        if not root.is_dir():
            continue
        root_r = _resolve(root)
        for f in sorted(root_r.rglob("*")):
            if not f.is_file():
                continue
            fr = _resolve(f)
            node = v.nodes.get(fr)
            if node is not None and node.sha is not None:
                continue  # hashed and compared with its record (or reported as not recorded)
            rel = f.relative_to(root_r)
            if any(c in _CACHE_DIRS for c in rel.parts[:-1]):
                why = "internal cache (re-creatable working data, not an output; nothing records its hash)"
            elif any(_is_temp(Path(c)) for c in rel.parts):
                why = "temporary or hidden file (a write in progress or left by an interrupted job)"
            elif f.name == _AUDIT_NAME:
                why = "audit log (append-only journal of jobs; no record holds its hash)"
            elif fr in v.record_files:
                why = ("manifest/sidecar: read, and its rows checked against the files they describe, but no "
                       "record holds its own SHA-256 (an edit to a field no file repeats would not show)")
            else:
                why = "not an output and no manifest or sidecar records its SHA-256"
            out.append({"path": str(f), "reason": why})
    return out


def verify_run(paths: Iterable[str | os.PathLike], *, source_roots: Iterable[str | os.PathLike] = (),
               pixels: bool = False) -> tuple[list[Result], list[dict[str, str]]]:
    """``verify_paths`` plus the files under the given directories it did not check, each with why."""
    paths = list(paths)
    v = Verifier(source_roots=source_roots, pixels=pixels, roots=[p for p in paths if Path(p).is_dir()])
    return _verify(v, paths), unchecked_files(v, paths)


def verify_paths(paths: Iterable[str | os.PathLike], *, source_roots: Iterable[str | os.PathLike] = (),
                 pixels: bool = False) -> list[Result]:
    """Verify every output found under ``paths``; one ``Result`` per output, sorted by path.

    ``source_roots``: directories to search (by file name and SHA-256) for sources and parents that have
    moved since the run. ``pixels``: also decode the source frame and compare native-resolution crops
    pixel for pixel. Raises ``VerifyUsageError`` for a path that does not exist or holds nothing to verify.
    """
    paths = list(paths)
    v = Verifier(source_roots=source_roots, pixels=pixels, roots=[p for p in paths if Path(p).is_dir()])
    return _verify(v, paths)


def _verify(v: Verifier, paths: list) -> list[Result]:
    targets = _expand(paths, v)
    nodes = [v.node(t) for t in targets]
    v.run_frame_checks()
    results = [v.result(n) for n in nodes]
    for prob in v.manifest_errors:
        results.append(Result(prob.file, MODIFIED, [prob], kind="manifest"))
    return sorted(results, key=lambda r: r.path)


def exit_code(results: list[Result]) -> int:
    worst = max((r.status for r in results), key=_SEVERITY.__getitem__, default=VERIFIED)
    return EXIT_CODES[worst]


# ----------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="output file, manifest (*.parquet), sidecar, or run/output directory")
    parser.add_argument("--source-root", action="append", default=[], metavar="DIR",
                        help="where to look for sources/parents that moved (by name + SHA-256); repeatable")
    parser.add_argument("--pixels", action="store_true",
                        help="also compare native-resolution crops with the decoded source frame")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only outputs that are not verified")
    parser.epilog = ("exit codes: 0 all verified, 1 any modified, 3 any source missing, 4 any unverifiable "
                     "(no provenance / no recorded hash), 2 usage error")


def main(args: argparse.Namespace) -> int:
    try:
        results, unchecked = verify_run(args.paths, source_roots=args.source_root, pixels=args.pixels)
    except VerifyUsageError as exc:
        print(f"survsr verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code = exit_code(results)
    if args.json:
        json.dump({"exit_code": code, "results": [r.to_dict() for r in results], "not_checked": unchecked},
                  sys.stdout, indent=2, default=str)
        print()
        return code
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.ok and args.quiet:
            continue
        where = f" (source {Path(r.source).name} frame {r.frame_index})" if r.source else ""
        print(f"{r.status:<15} {r.path}{where}")
        for p in r.problems:
            print(f"{'':<15}   {p.status}: {p.describe()}")
    summary = ", ".join(f"{k} {counts[k]}" for k in (VERIFIED, MODIFIED, SOURCE_MISSING, UNVERIFIABLE)
                        if k in counts)
    by_reason: dict[str, list[str]] = {}
    for u in unchecked:
        by_reason.setdefault(u["reason"], []).append(u["path"])
    if by_reason:
        print(f"not checked: {len(unchecked)} file(s) under the given directories:")
        for why, files in by_reason.items():
            shown = files if len(files) <= 5 else files[:5] + [f"... and {len(files) - 5} more (--json lists all)"]
            print(f"  {len(files)} x {why}:")
            for f in shown:
                print(f"      {f}")
    print(f"{len(results)} outputs: {summary}; exit code {code}")
    return code


COMMAND = Command(name="verify", add_arguments=add_arguments, main=main)
