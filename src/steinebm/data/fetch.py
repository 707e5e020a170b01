"""Fetching data files: a download checked against its md5 and put in place atomically (temp file,
rename), and a tar archive unpacked without leaving its folder."""

from __future__ import annotations

import os
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from steinebm.checksums import file_digest, hasher
from steinebm.errors import DataError, first_line

__all__: list[str] = []  # the loaders' own helpers: nothing here is for users to call


def _md5(path: Path) -> str:
    """The file's md5. A name that cannot be read (a folder in its place, no permission) is a
    DataError too: the loaders find files by name only, so that is user-fixable bad input."""
    try:
        return file_digest(path, "md5")
    except OSError as e:
        raise DataError(
            f"cannot read {path} ({e.strerror or first_line(e)}): replace it with the original file"
        ) from None


def _download(names: Mapping[str, str], folder: Path, mirrors: Sequence[str], title: str = "MNIST") -> None:
    """Fetch each of ``names`` (file name -> md5) missing from ``folder`` from the first mirror
    that serves it with that md5 (:func:`_fetch`). Only checked files are written; ``folder`` is
    created only when the first one is."""
    for name, md5 in names.items():
        if (folder / name).exists():
            continue
        last: Exception | None = None
        for mirror in mirrors:
            try:
                _fetch(mirror + name, folder / name, md5)
            except _WriteError:
                raise
            except DataError as e:  # no network, 404, a wrong md5: the next mirror
                last = e
                continue
            break
        else:
            raise DataError(
                f"{title} file {name} is missing from {folder} and could not be downloaded ({last}). "
                f"Put the four original {title} files ({', '.join(names)}) in {folder}, "
                "or point --data-dir / STEINEBM_DATA at the folder that holds them"
            )


def _check_md5(path: Path, md5: str) -> None:
    got = _md5(path)
    if got != md5:
        raise DataError(
            f"{path} has md5 {got}, expected {md5}: the file is corrupt or not the original; "
            "delete it and fetch it again"
        )


class _WriteError(DataError):
    """A download that arrived but could not be written: the disk's fault, not the mirror's."""


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _fetch(url: str, dest: Path, md5: str, hint: str = "") -> None:
    """Download ``url`` to ``dest``, the one downloader of the data package: streamed (with a
    progress bar on a terminal) through a temporary file and renamed into place only once its md5
    is ``md5``, so only a complete, checked file ever appears under its name. The temporary file
    lies in the nearest folder that exists, and ``dest``'s folder is made only for a checked file,
    so a failed download leaves no new folder. A download that fails (no network, 404, a wrong
    md5) is a DataError saying why (with ``hint``); a write that fails, a :class:`_WriteError`."""
    from tqdm.auto import tqdm

    h = hasher("md5")
    tmp: str | None = None

    def cannot_write(e: OSError) -> _WriteError:
        return _WriteError(f"cannot write {dest} ({first_line(e)}): free some space or choose another --data-dir")

    try:
        try:
            fd, tmp = tempfile.mkstemp(dir=_existing_ancestor(dest.parent), prefix=".steinebm-", suffix=".part")
        except OSError as e:
            raise cannot_write(e) from None
        with os.fdopen(fd, "wb") as fh:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None, leave=False) as bar:
                        for block in iter(lambda: resp.read(1 << 20), b""):
                            h.update(block)
                            try:
                                fh.write(block)
                            except OSError as e:
                                raise cannot_write(e) from None
                            bar.update(len(block))
            except _WriteError:
                raise
            except Exception as e:  # no network, 404, timeout, ...
                raise DataError(f"could not download {url} ({first_line(e)}){hint}") from None
        if h.hexdigest() != md5:
            raise DataError(f"download of {url} failed its md5 check (got {h.hexdigest()}, expected {md5}){hint}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except OSError as e:
            raise cannot_write(e) from None
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _safe_extract(archive: Path, dest: Path, folder: str, checksums: Mapping[str, str] | None = None) -> Path:
    """Extract the members under ``folder/`` of a .tar.gz into ``dest``, refusing absolute paths,
    ``..`` and links or special files anywhere in the archive; returns ``dest / folder``.

    With ``checksums`` (file name -> md5), every named file must be in the archive with that md5
    before any is moved into ``dest``: a bad file that reached ``dest`` would fail every later
    load, and the loader never downloads over a folder that looks complete.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                p = PurePosixPath(m.name)
                if p.is_absolute() or m.name.startswith("\\") or ".." in p.parts or ".." in m.name.split("\\"):
                    raise DataError(f"{archive} holds an unsafe member {m.name!r} (absolute or '..'); delete it")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive} holds a link or special file {m.name!r}: refused; delete it")
                if p.parts and p.parts[0] == folder:
                    members.append(m)
            with tempfile.TemporaryDirectory(dir=dest, prefix=".extract-") as tmp:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # Python without extraction filters: the members were checked above
                    tar.extractall(tmp, members=members)
                src = Path(tmp) / folder
                if not src.is_dir():
                    raise DataError(f"{archive} has no {folder}/ folder; delete it and fetch it again")
                for name, md5 in (checksums or {}).items():
                    got = _md5(src / name) if (src / name).is_file() else "missing"
                    if got != md5:
                        raise DataError(
                            f"{archive} holds {folder}/{name} with md5 {got}, expected {md5}: not the original "
                            "archive, nothing extracted; delete it and fetch it again"
                        )
                target = dest / folder
                target.mkdir(exist_ok=True)
                for f in src.iterdir():
                    if f.is_file():
                        os.replace(f, target / f.name)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract {archive} ({first_line(e)}); delete it and fetch it again") from None
    return dest / folder
