"""Safe unpacking of zoo tarballs and copying of zoo folders.

Every member is checked before anything is written (no absolute paths, no `..`, no links leaving
the target, no device files or fifos), and extraction then runs under tarfile's own `data` filter
as a second line of defence (on Pythons older than 3.11.4, which lack the filter, its mode and
owner rules are applied by hand). Zoo tarballs hold one top-level folder
(`ssd_mobilenet_v2_coco_2018_03_29/...`); that folder is flattened so the output holds the model
files directly.
"""

from __future__ import annotations

import gzip
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import uuid
import zlib
from pathlib import Path, PurePosixPath

from pipeline.errors import PipelineError

# Leading bytes of the formats tarfile can read ("r:*"); anything else is not an archive.
_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}
_USTAR_OFFSET = 257
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
_JUNK = ("__MACOSX", ".DS_Store")


def archive_format(path: Path, *, display: str) -> str:
    """'gzip', 'bzip2', 'xz' or 'tar'; a clear error for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        raise PipelineError(f"{display}: file is empty; fetch it again")
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    if head[_USTAR_OFFSET : _USTAR_OFFSET + 5] == b"ustar":
        return "tar"
    preview = head[:16]
    hint = (
        " (it looks like a web page: the server answered with an error or login page)"
        if head.lstrip()[:1] == b"<"
        else ""
    )
    raise PipelineError(
        f"{display}: not a .tar.gz/.tar archive (starts with {preview!r}){hint}; "
        "point zoo.url at the model's .tar.gz"
    )


def safe_extract(archive: Path, dest: Path, *, display: str) -> None:
    """Extract `archive` into the existing folder `dest`, refusing unsafe members."""
    archive_format(archive, display=display)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            if not members:
                raise PipelineError(f"{display}: archive is empty; fetch it again")
            for member in members:
                _check_member(member, display)
            _extract_checked(tar, dest, members)
    except PipelineError:
        raise
    except _FILTER_ERRORS as error:
        raise PipelineError(
            f"{display}: unsafe archive member ({error}); refusing to extract it"
        ) from error
    except _CORRUPT as error:
        raise PipelineError(
            f"{display}: truncated or corrupt archive ({_short(error)}); delete it and fetch "
            "again, and pin zoo.sha256 to catch this before extraction"
        ) from error
    except OSError as error:
        raise PipelineError(f"{display}: cannot extract to {dest} ({_short(error)})") from error


# tarfile's extraction filters arrived in Python 3.11.4 (and 3.10.12, 3.12); older 3.11 releases,
# such as Debian 12's 3.11.2, lack them.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[BaseException], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


def _extract_checked(tar: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo]) -> None:
    """Extract members that `_check_member` accepted, with the `data` filter where it exists."""
    if _HAS_DATA_FILTER:
        tar.extractall(dest, members=members, filter="data")
        return
    # Without the filter, do the rest of what it does: no setuid/setgid/sticky bits, no group or
    # world write, files owner-readable/writable, and no ownership taken from the archive.
    for member in members:
        base = 0o700 if member.isdir() else 0o600
        member.mode = (member.mode | base) & 0o755
        member.uid, member.gid = os.getuid(), os.getgid()
        member.uname = member.gname = ""
    tar.extractall(dest, members=members)


def _check_member(member: tarfile.TarInfo, display: str) -> None:
    name = member.name
    why = None
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        why = "absolute path"
    elif ".." in parts or ".." in name.split("\\"):
        why = "path with '..'"
    elif member.isdev() or member.isfifo():
        why = "device file or fifo"
    elif member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            why = f"symlink to {member.linkname!r} leaves the archive"
    elif member.islnk():
        target = posixpath.normpath(member.linkname)
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            why = f"hard link to {member.linkname!r} leaves the archive"
    elif not (member.isfile() or member.isdir()):
        why = "unsupported member type"
    if why:
        raise PipelineError(
            f"{display}: unsafe archive member {name!r} ({why}); refusing to extract it, "
            "the archive may be malicious: get the model from its official source"
        )


def copy_model_tree(source: Path, dest: Path, *, display: str) -> None:
    """Copy a local model folder into the existing folder `dest` (regular files only)."""
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        relative = Path(dirpath).relative_to(source)
        (dest / relative).mkdir(parents=True, exist_ok=True)
        for entry in dirnames:
            if (Path(dirpath) / entry).is_symlink():
                raise PipelineError(
                    f"{display}: {relative / entry} is a linked folder; copy the real files there"
                )
        for filename in filenames:
            path = Path(dirpath) / filename
            # Following a link is fine (it is the user's own folder), but a fifo or device would
            # hang or leak: copy regular files only.
            if not stat.S_ISREG(path.stat().st_mode):
                raise PipelineError(f"{display}: {relative / filename} is not a regular file")
            # copyfile, not copy2: the source may be read-only and the output must stay removable.
            shutil.copyfile(path, dest / relative / filename)


def single_root(folder: Path) -> Path:
    """The one top-level folder the content sits in, or `folder` itself."""
    entries = [p for p in folder.iterdir() if p.name not in _JUNK and not p.name.startswith("._")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return folder


def flatten_single_root(folder: Path) -> None:
    """Move the content of a single top-level folder up into `folder` (zoo tarball layout)."""
    root = single_root(folder)
    if root == folder:
        return
    # Rename first: the inner folder may contain an entry with its own name.
    holder = folder / f".flatten-{uuid.uuid4().hex}"
    root.rename(holder)
    for child in holder.iterdir():
        child.rename(folder / child.name)
    holder.rmdir()
    for junk in _JUNK:
        shutil.rmtree(folder / junk, ignore_errors=True)


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]
