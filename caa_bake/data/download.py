"""``caa-bake datasets pull``: fetch every manifest file, verify it, convert, move into place.

Sources, in order of precedence: the ``source`` argument (``--source``), then
``$CAA_BAKE_DATA_SOURCE``, then the pinned upstream URLs in the manifest. A source is
either a folder with the data-mirror layout (or a ``file://`` URL of one) or an
``http(s)://`` URL serving that layout.

All or nothing: files are fetched into a hidden staging folder *beside* the datasets dir
(same filesystem, so the final moves are renames; a killed pull's staging folder is removed
by the next pull: :func:`caa_bake.core.atomic.scratch_dir`). Each file is streamed in chunks
to a temporary file beside its staged target, checked against the manifest's size and
sha256, then renamed. The raw Anthropic evals are converted inside the staging folder too. Only
when every file has succeeded are the staged files moved into the datasets dir; on any
failure the staging folder is deleted and the datasets dir is left exactly as it was.
Files already present with the right sha256 are not fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from caa_bake import __version__
from caa_bake.core import CaaBakeError, datasets_dir, fsync_tree, is_quiet, scratch_dir
from caa_bake.data.anthropic_raw import convert_file
from caa_bake.data.behaviors import ANTHROPIC_RAW_NAMES
from caa_bake.data.datasets import anthropic_converted_paths, anthropic_raw_path, file_sha256
from caa_bake.data.manifest import ManifestEntry, load_manifest

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SOURCE_ENV",
    "DataSource",
    "PullReport",
    "pull",
    "resolve_source",
]

SOURCE_ENV = "CAA_BAKE_DATA_SOURCE"
DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 16


class _FetchError(Exception):
    """Why one file could not be fetched (turned into a CaaBakeError naming the file)."""


@dataclass(frozen=True)
class DataSource:
    """Where files come from: ``root`` (a mirror folder), ``base_url`` or neither (upstream)."""

    root: Path | None = None
    base_url: str | None = None

    def describe(self) -> str:
        """A short human description for messages."""
        if self.root is not None:
            return str(self.root)
        return self.base_url or "the pinned upstream URLs"

    def url_for(self, entry: ManifestEntry) -> str:
        """The URL ``entry`` is fetched from (for URL sources and upstream)."""
        if self.base_url is None:
            return entry.url
        return self.base_url + urllib.parse.quote(entry.path)

    @contextmanager
    def open(self, entry: ManifestEntry, timeout: float) -> Iterator[tuple[IO[bytes], int | None]]:
        """Yield a binary stream for ``entry`` and its announced length (if any)."""
        if self.root is not None:
            try:
                fh = (self.root / entry.path).open("rb")
            except FileNotFoundError:
                raise _FetchError(f"missing from the mirror {self.root}") from None
            except OSError as exc:
                raise _FetchError(f"cannot read from the mirror: {exc}") from exc
            with fh:
                yield fh, None
            return
        url = self.url_for(entry)
        request = urllib.request.Request(url, headers={"User-Agent": f"caa-bake/{__version__}"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise _FetchError(f"HTTP {exc.code} {exc.reason} for {url}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, BaseException) else exc
            raise _FetchError(f"connection error for {url}: {_describe(reason, timeout)}") from None
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            raise _FetchError(f"connection error for {url}: {_describe(exc, timeout)}") from None
        with response:
            length = response.headers.get("Content-Length")
            yield response, int(length) if length and length.isdigit() else None


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def resolve_source(source: str | None = None) -> DataSource:
    """Interpret ``source`` (else ``$CAA_BAKE_DATA_SOURCE``, else upstream).

    Raises ``CaaBakeError`` for a folder that does not exist or an unsupported URL scheme.
    """
    value = source if source else os.environ.get(SOURCE_ENV, "")
    value = value.strip()
    if not value:
        return DataSource()
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if scheme in ("http", "https"):
        return DataSource(base_url=value if value.endswith("/") else value + "/")
    if scheme == "file":
        root = Path(urllib.request.url2pathname(urllib.parse.urlsplit(value).path))
    elif len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise CaaBakeError(f"unsupported data source '{value}': use a folder or an http(s) URL")
    else:
        root = Path(value).expanduser()
    if not root.is_dir():
        raise CaaBakeError(
            f"data source folder '{root}' does not exist (from --source or ${SOURCE_ENV})"
        )
    return DataSource(root=root.resolve())


@dataclass
class PullReport:
    """What a pull did. Paths are relative to ``dest``."""

    dest: Path
    source: str
    fetched: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the terminal."""
        return (
            f"datasets in {self.dest}: {len(self.fetched)} fetched from {self.source}, "
            f"{len(self.already_present)} already present, {len(self.converted)} converted "
            "files written"
        )


def _is_verified(path: Path, entry: ManifestEntry) -> bool:
    try:
        return path.stat().st_size == entry.size and file_sha256(path) == entry.sha256
    except OSError:
        return False


def _fetch_one(
    entry: ManifestEntry, source: DataSource, target: Path, timeout: float, bar: tqdm
) -> None:
    """Stream ``entry`` into a temp file beside ``target``, verify, rename. Raises _FetchError."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.part-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, source.open(entry, timeout) as (stream, announced):
            while True:
                try:
                    chunk = stream.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _FetchError(
                        f"connection error after {received} bytes: {_describe(exc, timeout)}"
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > entry.size:
                    raise _FetchError(
                        f"checksum mismatch: body is larger than the expected {entry.size} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if announced is not None and received < announced:
            raise _FetchError(
                f"truncated download: got {received} of {announced} bytes (Content-Length)"
            )
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise _FetchError(
                f"checksum mismatch: sha256 {actual[:16]}... ({received} bytes), "
                f"expected {entry.sha256[:16]}... ({entry.size} bytes)"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _convert_anthropic(dest: Path, staging: Path, report: PullReport) -> None:
    """Convert each raw Anthropic eval; stage outputs that differ from what ``dest`` holds."""
    for raw_name in ANTHROPIC_RAW_NAMES:
        raw_rel = anthropic_raw_path(raw_name)
        raw = staging / raw_rel if (staging / raw_rel).is_file() else dest / raw_rel
        outputs = convert_file(raw, raw_name)
        for rel, data in zip(anthropic_converted_paths(raw_name), outputs, strict=True):
            current = dest / rel
            if current.is_file() and current.read_bytes() == data:
                continue
            staged = staging / rel
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(data)
            report.converted.append(rel)


def _commit(staging: Path, dest: Path, rels: list[str]) -> None:
    """Move verified staged files into ``dest`` (renames: same filesystem)."""
    fsync_tree(staging)
    for rel in rels:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)


def pull(
    source: str | None = None,
    dest: Path | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> PullReport:
    """Fetch, verify and convert every dataset file into ``dest`` (default: datasets dir).

    ``source``: a mirror folder or http(s) URL; ``None`` means ``$CAA_BAKE_DATA_SOURCE``,
    else the pinned upstream URLs. Raises ``CaaBakeError`` with one line naming the file and
    the reason when anything fails; ``dest`` is then left unchanged.
    """
    dest = (dest if dest is not None else datasets_dir()).expanduser().absolute()
    src = resolve_source(source)
    entries = load_manifest()
    report = PullReport(dest=dest, source=src.describe())
    todo: list[ManifestEntry] = []
    for entry in entries:
        if _is_verified(dest / entry.path, entry):
            report.already_present.append(entry.path)
        else:
            todo.append(entry)

    stack = ExitStack()  # the staging folder: removed at the end, swept if we are killed
    try:
        staging = stack.enter_context(scratch_dir(dest))
    except OSError as exc:
        raise CaaBakeError(f"cannot create a staging folder beside {dest}: {exc}") from exc
    with stack:
        with tqdm(
            total=sum(e.size for e in todo),
            desc="datasets",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=is_quiet(),
            leave=False,
        ) as bar:
            for entry in todo:
                bar.set_postfix_str(entry.path.rsplit("/", 1)[-1], refresh=False)
                try:
                    _fetch_one(entry, src, staging / entry.path, timeout, bar)
                except _FetchError as exc:
                    raise CaaBakeError(
                        f"cannot pull {entry.path}: {exc}; nothing was changed in {dest}"
                    ) from None
                report.fetched.append(entry.path)
        _convert_anthropic(dest, staging, report)
        _commit(staging, dest, report.fetched + report.converted)
    return report
