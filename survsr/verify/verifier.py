"""The verifier: builds the graph of an output's records (PNG text chunks, sidecars, manifest rows) back to
the source video, finds parents that moved (by name and hash, within bounded roots), and checks every
recorded hash, document field, marking and model file. Checks against the source frames are deferred to
:class:`survsr.verify.frames.FrameChecks` so that each source is decoded once."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from survsr.provenance import PROVENANCE_KEY, sha256_file
from survsr.sidecars import SIDECAR_SUFFIX
from survsr.verify.frames import FrameChecks
from survsr.verify.results import (MODIFIED, SOURCE_MISSING, UNVERIFIABLE, VERIFIED, _SEVERITY, Problem, Result,
                                   _Node)

log = logging.getLogger(__name__)

DOC_SCHEMA = "survsr-provenance-v1"
VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".ts", ".m4v", ".webm"}
# The manifest column whose file the ``sha256`` column describes: first of these present. Any other
# ``X_path`` column is checked against ``X_sha256`` when that column exists.
PRIMARY_PATH_COLUMNS = ("hr_path", "sr_path", "enhanced_path", "output_path", "out_path", "path", "lr_path")
ROW_ID_COLUMNS = ("crop_id", "id", "name", "path", "hr_path", "frame_index")
_MIN_SEARCH_DEPTH = 2       # never search /, /tmp, /work ... for moved parents
_MAX_SEARCH_FILES = 200_000
_MAX_SIDECAR_BYTES = 50 << 20
_CACHE_DIRS = {"cache", "__pycache__"}  # internal caches (e.g. evaluate/cache/zssr): not outputs, not scanned


@dataclass
class _ManifestRef:
    manifest: Path
    row_id: str
    path_column: str
    sha_column: str
    expected_sha: str | None
    row: dict[str, Any]


def _resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p.absolute()


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") or p.name.endswith(".tmp")


class Verifier(FrameChecks):
    def __init__(self, *, source_roots: Iterable[str | os.PathLike] = (), pixels: bool = False,
                 roots: Iterable[str | os.PathLike] = ()):
        self.source_roots = [Path(r) for r in source_roots]
        # The run directories being verified. A record that names a file by an absolute path from before a
        # copy or move (``/old/run/train/generator.safetensors``) is checked against the file at the same
        # place under these roots, never against the original run's file (issue 15: a tampered copy passed).
        self.roots = [_resolve(Path(r)) for r in roots]
        self.pixels = pixels
        self.nodes: dict[Path, _Node] = {}
        self.manifest_refs: dict[Path, list[_ManifestRef]] = {}
        self.loaded_manifests: set[Path] = set()
        self.scanned_dirs: set[Path] = set()
        self.sha_cache: dict[Path, str] = {}
        self.name_index: dict[Path, dict[str, list[Path]]] = {}
        self.frame_checks: dict[Path, list[tuple[_Node, dict[str, Any]]]] = {}
        self.manifest_errors: list[Problem] = []
        self.sidecar_of: dict[Path, tuple[Path, dict[str, Any]]] = {}
        self.sidecar_dirs: set[Path] = set()
        self.record_files: set[Path] = set()  # manifests and sidecars read as records of other files

    # ------------------------------------------------------------------ manifests
    def load_manifest(self, path: Path) -> list[Path]:
        """Index a parquet manifest's rows by the files they describe; returns those files."""
        path = _resolve(path)
        if path in self.loaded_manifests:
            return [p for p, refs in self.manifest_refs.items() if any(r.manifest == path for r in refs)]
        self.loaded_manifests.add(path)
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001
            self.manifest_errors.append(Problem(MODIFIED, str(path), "manifest", f"unreadable: {exc}"))
            return []
        cols = table.column_names
        if "sha256" not in cols and not any(c.endswith("_sha256") for c in cols):
            return []  # not a manifest of files (e.g. a metrics table)
        pairs: list[tuple[str, str]] = []
        primary = next((c for c in PRIMARY_PATH_COLUMNS if c in cols), None)
        if primary and "sha256" in cols:
            pairs.append((primary, "sha256"))
        for c in cols:
            if c.endswith("_path") and c != "source_path" and c != primary and c[:-5] + "_sha256" in cols:
                pairs.append((c, c[:-5] + "_sha256"))
        id_col = next((c for c in ROW_ID_COLUMNS if c in cols), None)
        self.record_files.add(path)
        files = []
        for i, row in enumerate(table.to_pylist()):
            row_id = f"{id_col}={row[id_col]}" if id_col else f"row {i}"
            for pcol, scol in pairs:
                rel = row.get(pcol)
                if not rel:
                    continue
                f = Path(rel)
                if f.is_absolute():
                    f = self._in_roots(f) or _resolve(f)
                else:
                    # Contract: relative to the manifest's directory. Internal part manifests (ingest's
                    # parts/*.parquet) are relative to the run directory above: accept the first that exists,
                    # and for a file that is gone, the first whose directory exists (a deleted crop is then
                    # reported at its real path, not at a path under parts/).
                    cands = [path.parent / f, path.parent.parent / f, path.parent.parent.parent / f]
                    f = _resolve(next((c for c in cands if c.is_file()),
                                      next((c for c in cands if c.parent.is_dir()), cands[0])))
                self.manifest_refs.setdefault(f, []).append(
                    _ManifestRef(path, row_id, pcol, scol, row.get(scol), row))
                files.append(f)
        return files

    def load_sidecar(self, side: Path) -> list[Path]:
        """Index a JSON sidecar (any JSON object with a top-level ``survsr:provenance`` document) by the
        file it describes: ``file`` or ``path`` (relative to the sidecar), else ``<name>.provenance.json``
        -> ``<name>``. A sidecar whose ``crops`` list holds {path, sha256} entries (enhance's faces mode)
        is also a manifest of those files. Returns the described files; [] for other JSON."""
        side = _resolve(side)
        try:
            if side.stat().st_size > _MAX_SIDECAR_BYTES:
                return []
            rec = json.loads(side.read_text())
        except (OSError, ValueError):
            if side.name.endswith(SIDECAR_SUFFIX):
                self.manifest_errors.append(Problem(MODIFIED, str(side), "sidecar", "unreadable JSON"))
            return []
        if not isinstance(rec, dict) or PROVENANCE_KEY not in rec:
            return []
        rel = rec.get("file") or rec.get("path")
        if rel:
            target = _resolve(side.parent / str(rel))
        elif side.name.endswith(SIDECAR_SUFFIX):
            target = _resolve(side.with_name(side.name[: -len(SIDECAR_SUFFIX)]))
        else:
            return []
        files = []
        self.record_files.add(side)
        crops = rec.get("crops")
        if isinstance(crops, list):
            for i, c in enumerate(crops):
                if isinstance(c, dict) and c.get("path"):
                    f = _resolve(side.parent / str(c["path"]))
                    self.manifest_refs.setdefault(f, []).append(
                        _ManifestRef(side, f"crops[{i}]", "path", "sha256", c.get("sha256"), c))
                    files.append(f)
        if not target.is_dir():
            self.sidecar_of[target] = (side, rec)
            files.append(target)
        return files

    def scan_sidecars(self, d: Path) -> None:
        if d in self.sidecar_dirs:
            return
        self.sidecar_dirs.add(d)
        for j in sorted(d.glob("*.json")):
            if not _is_temp(j):
                self.load_sidecar(j)

    def scan_ancestor_manifests(self, file: Path, levels: int = 4) -> None:
        """A file given alone: find the manifests that list it in its directory and a few above."""
        d = file.parent
        for _ in range(levels):
            if d not in self.scanned_dirs:
                self.scanned_dirs.add(d)
                for m in sorted(d.glob("*.parquet")):
                    if not _is_temp(m):
                        self.load_manifest(m)
            if d == file.parent or d == file.parent.parent:
                self.scan_sidecars(d)
            if d.parent == d:
                break
            d = d.parent

    # ------------------------------------------------------------------ helpers
    def sha(self, path: Path) -> str:
        if path not in self.sha_cache:
            self.sha_cache[path] = sha256_file(path)
        return self.sha_cache[path]

    def _names_under(self, root: Path) -> dict[str, list[Path]]:
        """File name -> paths under ``root``. Shallow roots (``/``, ``/tmp``) are never walked and the walk
        is capped, so a stray relative record cannot make verify crawl a whole disk."""
        if root not in self.name_index:
            idx: dict[str, list[Path]] = {}
            if root.is_dir() and len(root.parts) > _MIN_SEARCH_DEPTH:
                seen = 0
                for dirpath, _dirs, files in os.walk(root):
                    for name in files:
                        idx.setdefault(name, []).append(Path(dirpath) / name)
                    seen += len(files)
                    if seen > _MAX_SEARCH_FILES:
                        log.warning("verify: stopped indexing %s after %d files", root, seen)
                        break
            self.name_index[root] = idx
        return self.name_index[root]

    def _in_roots(self, p: Path, sha: str | None = None) -> Path | None:
        """The file an absolute record names, found at the same relative place under a verified root.

        A path already under a root is itself. Otherwise the longest tail of the path that exists under a
        root wins (``/old/run/train/g.safetensors`` -> ``ROOT/train/g.safetensors``). A bare file name
        matching (tail of one part) is taken only when its hash is the recorded one, so that an external
        source that happens to share a name with a file at the top of the run is not mistaken for it."""
        p = _resolve(p) if p.exists() else p
        for root in self.roots:
            if p == root or root in p.parents:
                return p
            parts = p.parts[1:]
            for k in range(len(parts), 0, -1):
                c = root.joinpath(*parts[-k:])
                if c.is_file() and (k >= 2 or (sha is not None and self.sha(_resolve(c)) == sha)):
                    return _resolve(c)
        return None

    def _find(self, recorded: str, sha: str | None, bases: list[Path], search_roots: list[Path]) -> Path | None:
        """Where the file a record names lives now. An absolute path is first looked for under the run
        directories being verified (a copied run is checked against its own files); then absolute paths and
        paths relative to the usual bases; then, since run directories move, a file of that name and hash
        under ``search_roots``. A candidate with the recorded hash wins over one without."""
        p = Path(recorded)
        if p.is_absolute():
            inside = self._in_roots(p, sha)
            if inside is not None:
                return inside
        cands = [p] if p.is_absolute() else [b / p for b in bases]
        existing = [_resolve(c) for c in cands if c.is_file()]
        for c in existing:
            if sha is None or self.sha(c) == sha:
                return c
        same_name: list[Path] = []
        for root in search_roots:
            for c in self._names_under(root).get(p.name, []):
                c = _resolve(c)
                if sha is not None and self.sha(c) == sha:
                    return c
                same_name.append(c)
        # Nothing with the recorded hash: the file that is there under that name has been changed.
        return existing[0] if existing else (sorted(same_name)[0] if same_name else None)

    def _find_by_sha(self, sha: str, roots: list[Path]) -> Path | None:
        for root in roots:
            for paths in self._names_under(root).values():
                for c in paths:
                    if self.sha(_resolve(c)) == sha:
                        return _resolve(c)
        return None

    # ------------------------------------------------------------------ one file
    def node(self, path: Path, original: bool = False) -> _Node:
        """``original``: the record that led here calls the file an original input (a still photo, a face
        folder image): it has no survsr history, so its recorded hash is all there is to check."""
        path = _resolve(path)
        if path in self.nodes:
            return self.nodes[path]
        n = _Node(path)
        self.nodes[path] = n  # before recursing: a cyclic record must not loop
        self.scan_ancestor_manifests(path)
        if not path.is_file():
            # Gone, not altered: the chain cannot be followed (exit 3, as documented), and the record says
            # exactly which file is gone.
            n.own.append(Problem(SOURCE_MISSING, str(path), "file", "missing (listed in a manifest or sidecar)"))
            return n
        n.sha = self.sha(path)
        for ref in self.manifest_refs.get(path, []):
            n.recorded = True
            if ref.expected_sha != n.sha:
                where = (f"{ref.manifest.name} {ref.row_id}.{ref.sha_column}" if ref.manifest.suffix == ".json"
                         else f"{ref.manifest.name} column {ref.sha_column}, {ref.row_id}")
                n.own.append(Problem(MODIFIED, str(path), f"sha256 ({where})",
                                     "file bytes differ from the manifest", ref.expected_sha, n.sha))
        docs: list[tuple[str, dict[str, Any]]] = []
        if path in self.sidecar_of:
            side, sc = self.sidecar_of[path]
            n.recorded = True
            if sc.get("sha256") != n.sha:
                n.own.append(Problem(MODIFIED, str(path), f"sha256 (sidecar {side.name})",
                                     "file bytes differ from the sidecar", sc.get("sha256"), n.sha))
            if isinstance(sc.get(PROVENANCE_KEY), dict):
                docs.append(("sidecar", sc[PROVENANCE_KEY]))
            else:
                n.own.append(Problem(MODIFIED, str(side), PROVENANCE_KEY, "sidecar's provenance is not an object"))
            self._check_row(n, sc, side, "top level", docs[-1][1] if docs else None)
        if path.suffix.lower() == ".png":
            self._png(n, docs)
        if len(docs) > 1 and docs[0][1] != docs[1][1]:
            n.own.append(Problem(MODIFIED, str(path), PROVENANCE_KEY, "PNG text chunk and sidecar disagree"))
        if not docs:
            # Images and videos must carry provenance. Other files (a manifest, model weights) reached as a
            # parent are data checked by hash alone; as a target they are reported unverifiable in result().
            is_media = path.suffix.lower() == ".png" or path.suffix.lower() in VIDEO_EXTS
            if is_media and not original and not any(p.status == MODIFIED for p in n.own):
                n.own.append(Problem(UNVERIFIABLE, str(path), PROVENANCE_KEY,
                                     "no provenance document (PNG text chunk or sidecar)"))
            return n
        n.doc = docs[0][1]
        self._check_doc(n)
        return n

    def _png(self, n: _Node, docs: list) -> None:
        from PIL import Image

        try:
            with Image.open(n.path) as im:
                im.verify()  # every chunk's CRC: catches a flipped byte even without a manifest
            with Image.open(n.path) as im:
                text = dict(getattr(im, "text", {}) or {})
        except Exception as exc:  # noqa: BLE001
            n.own.append(Problem(MODIFIED, str(n.path), "png data", f"corrupt PNG: {exc}"))
            return
        raw = text.get(PROVENANCE_KEY)
        if raw is None:
            return
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            n.own.append(Problem(MODIFIED, str(n.path), PROVENANCE_KEY, f"unparseable: {exc}"))
            return
        docs.insert(0, ("png", doc))

    def _check_doc(self, n: _Node) -> None:
        doc, f = n.doc, str(n.path)
        assert doc is not None
        if doc.get("schema") != DOC_SCHEMA:
            n.own.append(Problem(MODIFIED, f, "schema", "unknown provenance schema", DOC_SCHEMA, doc.get("schema")))
        stages = doc.get("stages")
        if not isinstance(stages, list) or not stages:
            n.own.append(Problem(MODIFIED, f, "stages", "no stage records"))
            stages = []
        if not isinstance(doc.get("model_output"), bool):
            n.own.append(Problem(MODIFIED, f, "model_output", "missing or not true/false"))
        elif not doc["model_output"] and any(isinstance(s, dict) and s.get("model_sha256") for s in stages):
            n.own.append(Problem(MODIFIED, f, "model_output", "a model stage touched it but it is not marked "
                                 "as model output", True, False))
        self._check_manifest_fields(n)
        self._check_marking(n)
        # Parents: each must exist (else the chain is broken) with the hash the record holds.
        parents = doc.get("parents") or []
        bases = [n.path.parent, *n.path.parents]
        bases += [r.manifest.parent for r in self.manifest_refs.get(n.path, [])]
        roots = list(n.path.parents)[:3] + self.source_roots
        src_sha = (doc.get("source") or {}).get("sha256") if isinstance(doc.get("source"), dict) else None
        for i, par in enumerate(parents):
            if not isinstance(par, dict) or "path" not in par:
                n.own.append(Problem(MODIFIED, f, f"parents[{i}]", "malformed parent record"))
                continue
            if src_sha and par.get("sha256") == src_sha:
                continue  # the source video itself: checked (hash, frame, box) by _check_source
            pbases = bases
            if par.get("manifest"):  # optional: the manifest the path is relative to (relative to the child)
                pbases = [(n.path.parent / str(par["manifest"])).parent, *bases]
            found = self._find(str(par["path"]), par.get("sha256"), pbases, roots)
            if found is None:
                n.own.append(Problem(SOURCE_MISSING, str(par["path"]), f"parents[{i}].path",
                                     f"parent of {n.path.name} not found near it; if its run directory "
                                     "lives elsewhere, pass --source-root DIR"))
                continue
            pn = self.node(found, original=bool(par.get("original")))
            n.parents.append(pn)
            if par.get("sha256") != pn.sha and pn.sha is not None:
                n.own.append(Problem(MODIFIED, str(found), f"parents[{i}].sha256 (recorded in {n.path.name})",
                                     "parent bytes differ from the child's record", par.get("sha256"), pn.sha))
            psrc, src = (pn.doc or {}).get("source"), doc.get("source")
            if isinstance(psrc, dict) and isinstance(src, dict):
                for k in ("sha256", "frame_index", "box"):
                    if k in psrc and k in src and psrc[k] != src[k]:
                        n.own.append(Problem(MODIFIED, f, f"source.{k}", f"differs from parent {found.name}",
                                             psrc[k], src[k]))
        self._check_source(n)
        self._check_models(n, stages)

    def _check_manifest_fields(self, n: _Node) -> None:
        for ref in self.manifest_refs.get(n.path, []):
            self._check_row(n, ref.row, ref.manifest, ref.row_id, n.doc)

    def _check_row(self, n: _Node, row: dict[str, Any], where_file: Path, row_id: str,
                   doc: dict[str, Any] | None) -> None:
        """A manifest row (or sidecar) and the embedded document must tell the same story."""
        if not isinstance(doc, dict):
            return
        src = doc.get("source") if isinstance(doc.get("source"), dict) else {}
        checks = [("source_sha256", src.get("sha256"), "source.sha256"),
                  ("frame_index", src.get("frame_index"), "source.frame_index"),
                  ("box", src.get("box"), "source.box")]
        if isinstance(src.get("box"), (list, tuple)) and len(src["box"]) == 4:
            checks += [(c, v, f"source.box[{j}]") for j, (c, v) in
                       enumerate(zip(("box_x", "box_y", "box_w", "box_h"), src["box"]))]
        for col, val, fld in checks:
            got = row.get(col)
            if isinstance(got, tuple):
                got = list(got)
            if got is not None and val is not None and got != val:
                n.own.append(Problem(MODIFIED, str(where_file), f"{col} ({where_file.name} {row_id})",
                                     f"disagrees with {n.path.name}'s {fld}", val, got))
        t, got = src.get("time_s"), row.get("time_s")
        if t is not None and got is not None and abs(float(t) - float(got)) > 1e-4:
            n.own.append(Problem(MODIFIED, str(where_file), f"time_s ({where_file.name} {row_id})",
                                 f"disagrees with {n.path.name}'s source.time_s", t, got))

    def _check_marking(self, n: _Node) -> None:
        rec = n.doc.get("marking")
        if not isinstance(rec, dict) or not rec.get("visible_label"):
            return
        from survsr.marking import config_from_record, label_present

        try:
            cfg = config_from_record(rec)
            img, tol = self._first_image(n.path)
        except Exception as exc:  # noqa: BLE001
            n.own.append(Problem(MODIFIED, str(n.path), "marking", f"cannot check the label: {exc}"))
            return
        if img is not None and not label_present(img, cfg, tolerance=tol):
            n.own.append(Problem(MODIFIED, str(n.path), "marking.visible_label",
                                 f"record says the {cfg.text!r} label is burned in, pixels do not show it"))

    @staticmethod
    def _first_image(path: Path):
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                import numpy as np

                return np.asarray(im.convert("RGB")), 0.0
        if path.suffix.lower() in VIDEO_EXTS:
            import av

            with av.open(str(path)) as c:
                for frame in c.decode(video=0):
                    return frame.to_ndarray(format="rgb24"), 12.0  # lossy codec: mean abs error budget
        return None, 0.0

    def _check_source(self, n: _Node) -> None:
        src = n.doc.get("source")
        if src is None:
            return
        f = str(n.path)
        if not isinstance(src, dict) or not src.get("sha256"):
            n.own.append(Problem(MODIFIED, f, "source", "source record lacks sha256"))
            return
        if src.get("path") and "://" in str(src["path"]):
            n.own.append(Problem(SOURCE_MISSING, str(src["path"]), "source.path",
                                 "a live stream (URL): its bytes were never stored, so the chain ends here; "
                                 "record the stream to a file and ingest that file for evidence"))
            return
        if src.get("path"):
            found = self._find(str(src["path"]), src["sha256"], [n.path.parent], self.source_roots)
        else:  # an upload that was never stored: only --source-root can bring it back (by hash)
            found = self._find_by_sha(src["sha256"], self.source_roots)
        if found is None:
            where = src.get("path") or f"(upload, sha256 {src['sha256'][:16]}...)"
            n.own.append(Problem(SOURCE_MISSING, str(where), "source.path",
                                 "source not found" + ("" if src.get("path") else "; pass --source-root DIR")))
            return
        actual = self.sha(found)
        if actual != src["sha256"]:
            n.own.append(Problem(MODIFIED, str(found), f"source.sha256 (recorded in {n.path.name})",
                                 "source file bytes differ from the record", src["sha256"], actual))
            return
        if src.get("frame_index") is not None:
            self.frame_checks.setdefault(found, []).append((n, src))

    def _check_models(self, n: _Node, stages: list) -> None:
        for i, st in enumerate(stages):
            if not isinstance(st, dict):
                n.own.append(Problem(MODIFIED, str(n.path), f"stages[{i}]", "malformed stage record"))
                continue
            mp, ms = st.get("model_path"), st.get("model_sha256")
            if mp and ms:
                found = self._find(str(mp), ms, [n.path.parent, *n.path.parents], self.source_roots)
                if found is not None and self.sha(found) != ms:
                    n.own.append(Problem(MODIFIED, str(found), f"stages[{i}].model_sha256",
                                         "model weights differ from the record", ms, self.sha(found)))

    # ------------------------------------------------------------------ results
    def problems(self, n: _Node, seen: set[Path] | None = None) -> list[Problem]:
        seen = set() if seen is None else seen
        if n.path in seen:
            return []
        seen.add(n.path)
        out = list(n.own)
        for p in n.parents:
            out += self.problems(p, seen)
        return out

    def result(self, n: _Node) -> Result:
        probs = self.problems(n)
        if n.doc is None and not probs:
            probs.append(Problem(UNVERIFIABLE, str(n.path), PROVENANCE_KEY, "no provenance document (sidecar)"))
        if not n.recorded and n.doc is not None and n.sha is not None:
            probs.append(Problem(UNVERIFIABLE, str(n.path), "sha256",
                                 "no manifest or sidecar records this file's SHA-256"))
        status = max((p.status for p in probs), key=_SEVERITY.__getitem__, default=VERIFIED)
        src = (n.doc or {}).get("source") if isinstance((n.doc or {}).get("source"), dict) else {}
        return Result(str(n.path), status, probs, (n.doc or {}).get("kind"), src.get("path"),
                      src.get("frame_index"), n.sha)
