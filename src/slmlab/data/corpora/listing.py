"""Which files a corpus folder or glob gives: the walk of a folder (links to folders followed,
hidden files and folders left out, each file once) and a shell glob as bash's globstar reads it,
each refusing a folder it cannot list rather than leaving its files out without a word."""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
from pathlib import Path

from .compressed import format_suffix
from .fetch import CorpusError

SKIPPED_FOLDERS = ("__MACOSX",)  # macOS zip resource forks


def corpus_files(folder: Path, suffixes: tuple[str, ...] | None) -> list[Path]:
    """The files under `folder` with one of `suffixes` (None: any), sorted, leaving out hidden files
    and folders (.git, .ipynb_checkpoints copies that would put one text on both sides of the split,
    .DS_Store) and __MACOSX resource forks, as a shell glob does. Links to folders are followed (a
    corpus folder often links the data in), each real folder and file read once (a link to a folder
    above, or two names of one file, would put the same text in twice). A folder inside that cannot
    be listed (permissions) is refused: its files would be left out without a word."""

    def refuse(err: OSError) -> None:
        raise _unlisted(Path(err.filename), err, f"its files would be left out of the corpus read from {folder}")

    found, seen = [], set()  # seen: real folders walked
    for here, folders, names in os.walk(folder, onerror=refuse, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        folders[:] = sorted(name for name in folders if not name.startswith(".") and name not in SKIPPED_FOLDERS)
        paths = (Path(here, name) for name in names if not name.startswith("."))
        found += [path for path in paths if path.is_file() and (suffixes is None or format_suffix(path) in suffixes)]
    return read_once(found)


def read_once(paths) -> list[Path]:
    """`paths` sorted, each file once: a later name of a file already listed (a link to it, a path
    through a link to its folder) is left out."""
    seen, files = set(), []
    for path in sorted(paths):
        if (real := os.path.realpath(path)) not in seen:
            seen.add(real)
            files.append(path)
    return files


def glob_files(pattern: str) -> list[Path]:
    """The files the shell glob `pattern` (~ expanded) matches, sorted. As in bash's globstar, `**`
    matches any depth of folders but does not follow links to folders (glob.glob does: a link to a
    folder above gave each file again at every depth, 40 times over for one link, and two such
    links never finished), names starting with '.' match only a part that starts with '.', and a
    file matched under two names is read once. A folder the glob would list but this user may not
    is refused: its files would be left out."""
    pattern = str(Path(pattern).expanduser())
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    root, rest = Path(*parts[:fixed]) if fixed else Path("."), parts[fixed:]
    if not rest:
        return [root] if root.is_file() else []
    if rest[-1] == "**":  # every file below, as glob.glob's 'folder/**' (pathlib's matches folders only)
        rest = (*rest, "*")
    if any("**" in part and part != "**" for part in rest):
        raise CorpusError(
            f"data.source: the glob '{pattern}' has '**' inside a name; '**' stands alone between slashes (a/**/*.txt)"
        )
    _refuse_unlisted_folders(root, rest, pattern)
    dotted = any(part.startswith(".") for part in rest)
    return read_once(
        path
        for path in root.glob(str(Path(*rest)))
        if path.is_file() and (dotted or not any(part.startswith(".") for part in path.relative_to(root).parts))
    )


def _refuse_unlisted_folders(folder: Path, rest: tuple[str, ...], pattern: str) -> None:
    """Raise when the glob, matching `rest` (the pattern's parts below `folder`), would need to
    list a folder (a part with a wildcard; `**`: every visible folder below, links to folders
    not followed) or enter one (a plain part) that this user may not."""
    if not rest:
        return
    part, below = rest[0], rest[1:]
    if part == "**":
        _refuse_unlisted_folders(folder, below, pattern)  # '**' standing for no folder at all
        for entry in _listing(folder, pattern):
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                _refuse_unlisted_folders(Path(entry.path), rest, pattern)
        return
    if not glob.has_magic(part):  # looked up, not listed: needs only search permission
        if os.path.isdir(folder) and not os.access(folder, os.X_OK):
            denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            raise _unlisted(folder, denied, f"the glob '{pattern}' cannot find its files", "enter")
        _refuse_unlisted_folders(folder / part, below, pattern)
        return
    for entry in _listing(folder, pattern):
        if entry.is_dir() and fnmatch.fnmatch(entry.name, part) and (part.startswith(".") or not entry.name.startswith(".")):
            _refuse_unlisted_folders(Path(entry.path), below, pattern)


def _listing(folder: Path, pattern: str) -> list[os.DirEntry]:
    """`folder`'s entries; a folder this user may not list is refused (CorpusError), one that is
    not there (or not a folder) has none, as for the glob."""
    try:
        return list(os.scandir(folder))
    except PermissionError as err:
        raise _unlisted(folder, err, f"the glob '{pattern}' would leave its files out") from None
    except OSError:
        return []


def _unlisted(folder: Path, err: OSError, consequence: str, action: str = "list") -> CorpusError:
    return CorpusError(
        f"cannot {action} the folder {folder} ({(err.strerror or str(err)).lower()}): {consequence}; change its permissions "
        "(chmod, chown) or move it out of the corpus"
    )
