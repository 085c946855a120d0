"""Write the report's pages into its folder, rewriting only the pages whose HTML changed.

The folder keeps a manifest (`.megarun-report.json`): the SHA-256 of every page written and the
producers' data fingerprints. A page whose HTML is the same as last time is not rewritten (its
file keeps its time, so a web server or rsync sees nothing new); a page a producer kept (`Keep`:
its data did not change, so it was not even rendered) stays as it is; a page of the last build
that no producer gave again is removed. A folder that holds files but no manifest is not
megarun's: it is refused, never written into. Every file and folder is user-private, each page
is replaced atomically, and the manifest is written last: a build killed half-way leaves the
old manifest, so the next build checks every page again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from megarun.core.files import private_dirs, write_private
from megarun.errors import EnvironmentProblem, UsageError
from megarun.report.html.page import Page

MANIFEST = ".megarun-report.json"
FORMAT = 1


@dataclass(frozen=True)
class Keep:
    """A page whose data did not change since the last build and whose file is still there
    (the producer checked): leave it as it is."""

    path: str


@dataclass
class Manifest:
    """What the last build wrote: page path -> SHA-256 of its HTML, and data fingerprints."""

    pages: dict[str, str] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteResult:
    """What one build did to the folder."""

    out: Path
    written: list[str]
    unchanged: int
    removed: list[str]


def load_manifest(out: Path) -> Manifest | None:
    """The manifest of the report in `out`; None when `out` holds no report (or a damaged
    manifest: then every page is checked again)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    pages, prints = data.get("pages"), data.get("fingerprints")
    if not isinstance(pages, dict) or not isinstance(prints, dict):
        return None
    return Manifest({str(k): str(v) for k, v in pages.items()},
                    {str(k): str(v) for k, v in prints.items()})


def prepare_folder(out: Path, loaded: Manifest | None = None) -> Manifest:
    """Make sure `out` is a private folder megarun may write its report into; the manifest of
    the report already there (empty for a new one; `loaded`: read already)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder for the report")
    manifest = loaded if loaded is not None else load_manifest(out)
    if manifest is None and out.is_dir() and not (out / MANIFEST).exists() and any(out.iterdir()):
        raise UsageError(f"{out} holds files that are not a megarun report; "
                         "give --out an empty or new folder")
    private_dirs(out)
    return manifest or Manifest()


def _checked_path(out: Path, path: str) -> Path:
    # Producers name pages through urls.py; this is the last guard against a path that would
    # leave the folder.
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"page path outside the report: {path!r}")
    return out.joinpath(*pure.parts)


@dataclass(frozen=True)
class Written:
    """A page put into the folder already (by a worker process): its digest, and whether its
    file changed."""

    path: str
    digest: str
    changed: bool


def put_page(out: Path, page: Page, old: Manifest, made: set[Path]) -> Written:
    """Write `page` into `out` unless its file already holds the same HTML (as `old` recorded
    it); `made`: the folders already made private in this build (each is checked once)."""
    target = _checked_path(out, page.path)
    data = page.html.encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(data).hexdigest()
    if old.pages.get(page.path) == digest and os.path.exists(target):
        return Written(page.path, digest, False)
    try:
        if target.parent not in made:
            private_dirs(out, *_parents(out, target))
            made.add(target.parent)
        write_private(target, data)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write the report's page {target}: "
                                 f"{os.strerror(exc.errno or 0)}") from None
    return Written(page.path, digest, True)


def write_site(out: Path, outputs: Iterable[Page | Keep | Written], old: Manifest,
               fingerprints: dict[str, str]) -> WriteResult:
    """Write `outputs` into `out` (prepared by prepare_folder), remove the pages of `old` that
    are gone, and save the new manifest with `fingerprints` (read once `outputs` is spent: the
    producers record them while they yield their pages)."""
    new = Manifest()
    written: list[str] = []
    unchanged = 0
    made: set[Path] = set()  # folders made private in this build: once each, not per page
    for output in outputs:
        if isinstance(output, Keep):
            # nothing is written; the producer saw the file still there (ReportInput.still_there
            # lists each folder once: 10,000 kept pages is the common refresh, and it must stay
            # cheap)
            if output.path in old.pages:
                new.pages[output.path] = old.pages[output.path]
                unchanged += 1
                continue
            raise ValueError(f"kept page {output.path!r} is not in the report")
        done = output if isinstance(output, Written) else put_page(out, output, old, made)
        new.pages[done.path] = done.digest
        if done.changed:
            written.append(done.path)
        else:
            unchanged += 1
    # The producers record their fingerprints while `outputs` is consumed: copy them now.
    new.fingerprints = dict(fingerprints)
    removed = [path for path in old.pages if path not in new.pages]
    for path in removed:
        _checked_path(out, path).unlink(missing_ok=True)
    if written or removed or new != old:
        _save(out, new)  # else the manifest on disk says all there is: leave it untouched
    return WriteResult(out=out, written=written, unchanged=unchanged, removed=removed)


def _parents(out: Path, target: Path) -> list[Path]:
    folders = []
    folder = target.parent
    while folder != out:
        folders.append(folder)
        folder = folder.parent
    return list(reversed(folders))


def _save(out: Path, manifest: Manifest) -> None:
    data = {"format": FORMAT, "pages": manifest.pages, "fingerprints": manifest.fingerprints}
    try:
        write_private(out / MANIFEST, json.dumps(data, sort_keys=True, separators=(",", ":")))
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write the report's manifest in {out}: "
                                 f"{os.strerror(exc.errno or 0)}") from None
