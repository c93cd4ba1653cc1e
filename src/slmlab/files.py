"""Files: the one crash-safe write every file slmlab writes goes through, checksums, and reading
a file that may be damaged as one clear error.

    write to <dir>/.<name>.<pid>.<random>.tmp  ->  flush + fsync the file  ->  rename over <name>
    ->  fsync <dir>

A reader (or a process killed mid-write) sees the old file or the new one, never half of one, and
after the directory's fsync the rename survives a power cut. Files get the mode a plain open()
would give them, 0o666 less the umask, whatever the writer did to the temp file (mkstemp's 0o600,
and safetensors' own 0o600, would hide run files from other users). A temp file left by a kill
carries its writer's PID, so `remove_stale_temps` can tell it from one a live process is still
writing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ConfigError, SlmlabError
from .tables import counted

TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp(\.\w+)?$")


def _umask() -> int:
    """The process's umask, read once at import (reading it means setting it, so not per write,
    where another thread could create a file in between)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()
FILE_MODE, FOLDER_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK


def give_normal_modes(folder: Path) -> None:
    """Give a folder built in a private temp folder (mkdtemp's 0o700, files of writers that
    create 0o600) and everything in it the modes mkdir and open() would have given them."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, FOLDER_MODE if path.is_dir() else FILE_MODE)


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


FULL_BELOW = 1 << 20  # free bytes under which a writer's failure is taken for a full disk


def disk_full(folder: str | Path) -> bool:
    """Whether the file system holding `folder` has (nearly) no room left: what a failed write
    means when its writer (numpy, torch, safetensors) reports it in words of its own."""
    return shutil.disk_usage(folder).free < FULL_BELOW


@contextlib.contextmanager
def room_for(folder: Path, what: str, fix: str, error: type[SlmlabError]) -> Iterator[None]:
    """Turn a write's failure for a full disk (an OSError with errno ENOSPC, or any error while
    `folder`'s disk is full) into one line saying so and what to do. Enter it inside the context
    that removes the partial files, so the disk is checked while it is still full."""
    try:
        yield
    except SlmlabError:
        raise
    except Exception as err:  # safetensors' SafetensorError, torch's RuntimeError: their own words for it
        if getattr(err, "errno", None) != errno.ENOSPC and not disk_full(folder):
            raise
        raise error(f"no space left on the device of {folder} for {what} ({err}); nothing was kept: {fix}") from None


def atomic_write(path: str | Path, write: Callable[[str], None], keep_suffix: bool = False) -> Path:
    """Call write(temp_path) to produce the file, then move it into place atomically. A writer
    that fails with the disk (nearly) full raises OSError(ENOSPC) whatever it raised itself.
    `keep_suffix`: the temp name ends in the file's own suffix too, for writers that choose the
    format by it (matplotlib's animation writers)."""
    path = Path(path)
    refuse_other_than_a_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix)
    except OSError as err:  # named by the file asked for, not by the temp file's random name
        raise OSError(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    try:
        try:
            write(tmp)
        except Exception as err:  # torch.save, safetensors and numpy report a full disk in their own words
            number = err.errno if isinstance(err, OSError) else None
            if number is None and disk_full(path.parent):
                number = errno.ENOSPC
            if number is None or getattr(err, "filename", None) is not None:
                raise
            raise OSError(number, os.strerror(number), str(path)) from err  # with the file the writer did not name
        os.chmod(tmp, FILE_MODE)  # after writing: a writer may replace the temp file with its own
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def json_text(value, **options) -> str:
    """`value` as standard JSON: NaN and infinities (an undefined CI, a p-value of one seed)
    become null, which every JSON reader takes (json.dumps would write NaN, which jq and
    JavaScript refuse). `options` go to json.dumps."""

    def finite(item):
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), allow_nan=False, **options)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path`: readers never see half a file."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_kind(path: str | Path) -> str:
    """What `path` is, links followed: 'file', 'folder', 'pipe' (a shell's <(command), a FIFO),
    'device' (/dev/null; a socket counts as one) or 'missing'."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "pipe" if stat.S_ISFIFO(mode) else "device"


def refuse_other_than_a_file(path: Path, option: str = "") -> None:
    """Refuse to write a file at `path` (named by `option`, if given) where a folder, a pipe or a
    device is: the atomic write's rename would put a file in the place of a pipe, or (as root) of
    /dev/null itself."""
    kind, named = file_kind(path), f"{option} {path}".strip()
    if kind == "folder":
        raise ConfigError(f"{named} is a folder: name a file to write")
    if kind in ("pipe", "device"):
        raise ConfigError(f"{named} is a {kind}, not a file: slmlab writes a whole file there and would replace it; name a file")


def is_run_folder(folder: str | Path) -> bool:
    """Whether `folder` is a slmlab run directory (its config.json beside its metrics.jsonl), as
    opposed to a corpus folder or a transformers model folder (a config.json alone)."""
    return (Path(folder) / "config.json").is_file() and (Path(folder) / "metrics.jsonl").is_file()


def check_replaceable(path: str | Path, option: str, what: str, is_ours: Callable[[str], bool]) -> None:
    """Refuse an output file that already holds something other than `what` (told apart by
    `is_ours(its text)`): a config, a corpus or notes named by mistake would be replaced. An
    earlier output of the same command is replaced, as rerunning it should. A folder, a pipe or a
    device (/dev/null), or a path below a file, is refused too: checked before the command's work,
    not at its end."""
    path = Path(path)
    refuse_other_than_a_file(path, option)
    above = next((folder for folder in path.parents if folder.exists()), None)
    if above is not None and not above.is_dir():
        raise ConfigError(f"{option} {path}: {above} is a file (a file stands where a folder is needed: choose another path)")
    if not path.is_file():
        return
    try:
        ours = is_ours(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise ConfigError(
            f"{option} {path} already holds a file that is not {what}: writing there would replace it; "
            "name another file, or delete that one first"
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(directory: Path, everyone: bool = False) -> list[Path]:
    """Delete the temp files (and build folders) of interrupted writes under `directory`
    (recursively): those whose writer is dead, or all of them when `everyone` (the caller holds the
    directory's lock, so no one else writes there). Another user's, in a folder this user may not
    delete from (a lab's shared cache), stay. Returns what was removed."""
    removed = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.rglob(".*.tmp*")):
        match = TEMP_NAME.match(path.name)
        if not match or path.is_symlink() or any(parent in removed for parent in path.parents):
            continue
        pid = int(match["pid"])
        if everyone or (pid != os.getpid() and not pid_alive(pid)):
            try:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            except PermissionError:
                continue
            removed.append(path)
    return removed


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (files larger than RAM are fine)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


HEAD_BYTES = 4096  # how much of a file wide_text reads


def wide_text(head: bytes) -> str | None:
    """Why `head` (a file's first bytes) is UTF-16 or UTF-32 rather than UTF-8 text, or None: named
    by its byte-order mark, or without one by its NUL bytes: such text holds one beside each ASCII
    letter (valid UTF-8, read as '\\x00H\\x00e...'), as binary files do; UTF-8 text holds almost none."""
    for name, marks in (("UTF-32", (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")), ("UTF-16", (b"\xff\xfe", b"\xfe\xff"))):
        if head.startswith(marks):
            return f"is {name} text (it starts with a {name} byte-order mark)"
    nuls = head.count(0)
    if len(head) < 8 or nuls * 4 < len(head):
        return None
    return (
        f"is not text: {nuls / len(head):.0%} of its first {counted(len(head), 'bytes')} are NUL, as in UTF-16 or UTF-32 "
        "text saved without a byte-order mark"
    )


def utf8_problem(data: bytes) -> str:
    """Why `data` (a file's or stream's bytes) is not UTF-8 text, to follow its name in a message:
    UTF-32 or UTF-16 named by its byte-order mark or NUL bytes (wide_text), else the first bad byte with its line and byte offset in
    the whole of `data` (a streaming decoder's error counts from its own chunk)."""
    if wide := wide_text(data[:HEAD_BYTES]):
        return wide
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return f"is not UTF-8 text (bad byte 0x{data[err.start]:02x} on line {line}, byte offset {err.start})"
    return "is not UTF-8 text"


def not_utf8(where: str, data: bytes) -> str:
    """The one-line error for a user's text file or stream `where` whose bytes are not UTF-8."""
    return f"{where} {utf8_problem(data)}; re-encode it as UTF-8"


def read_text(path: str | Path, what: str, error: type[SlmlabError], fix: str) -> str:
    """A UTF-8 file's text, or `error` naming the file, what is wrong and `fix` (what to do)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{what} {path} is missing; {fix}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file; {fix}") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} {utf8_problem(path.read_bytes())}; {fix}") from None
    except OSError as err:
        raise error(f"{what} {path} cannot be read ({err.strerror or err}); {fix}") from None
    if "\x00" in text[:HEAD_BYTES] and (problem := wide_text(text[:HEAD_BYTES].encode())):
        raise error(f"{what} {path} {problem}; {fix}")
    return text


def file_name_text(name: str) -> str:
    """A name the file system gave as text UTF-8 can hold: bytes of the name that are not UTF-8
    (which Python reads as lone surrogates) written \\xNN, so that a corpus file named in Latin-1
    still gives a document id, genre and title."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def lone_surrogate(value) -> str | None:
    """The first character of `value` (a string, or the strings in its lists and dicts) that no
    UTF-8 text can hold, as "\\uXXXX", else None: a lone UTF-16 surrogate, which JSON's "\\ud800"
    escape and Python's reading of command-line bytes that are not UTF-8 produce. Tokenizers and
    files cannot take one, so readers refuse it where it enters."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"\\u{ord(value[err.start]):04x}"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((bad for key, item in items for bad in (lone_surrogate(key), lone_surrogate(item)) if bad), None)


class JsonObject(dict):
    """A JSON object as parse_json reads it. `repeated`: the keys its text gives more than once,
    of which json.loads keeps the last in silence (readers refuse those they read)."""

    repeated: frozenset[str] = frozenset()


def json_object_pairs(pairs: list[tuple[str, object]]) -> JsonObject:
    """The object_pairs_hook that reads JSON objects as JsonObjects."""
    value = JsonObject(pairs)
    if len(value) < len(pairs):
        keys = [key for key, _ in pairs]
        value.repeated = frozenset(key for key in value if keys.count(key) > 1)
    return value


def parse_json(text: str, where, error: type[SlmlabError], expected: str = "JSON"):
    """json.loads(text) for a record from a user's file (a JSON line, a .json file), its objects
    JsonObjects: text that is not `expected`, or that holds a lone surrogate escape, is `error`
    naming `where`."""
    try:
        value = json.loads(text, object_pairs_hook=json_object_pairs)
    except json.JSONDecodeError as err:  # where in a whole file's text; in a line's, the column
        at = f"line {err.lineno}, column {err.colno}" if "\n" in text.strip() else f"column {err.colno}"
        raise error(f"{where}: not {expected} ({err.msg} at {at})") from None
    bad = lone_surrogate(value) if "\\u" in text else None  # only a \u escape makes one
    if bad:
        raise error(f"{where}: holds {bad}, half of a UTF-16 pair and no character; fix or drop that record")
    return value


def read_json(path: str | Path, what: str, error: type[SlmlabError], fix: str, expect: type = dict):
    """A JSON file's value, checked to be an `expect` (dict, list); anything else is `error`."""
    text = read_text(path, what, error, fix)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{what} {path} is damaged (not JSON: {err.msg} at line {err.lineno}); {fix}") from None
    if "\\u" in text and lone_surrogate(value):
        raise error(f"{what} {path} is damaged (it holds {lone_surrogate(value)}, half of a UTF-16 pair); {fix}")
    if not isinstance(value, expect):
        raise error(f"{what} {path} is damaged (a JSON {type(value).__name__}, not a {expect.__name__}); {fix}")
    return value


def require_fields(
    value: dict, fields: dict[str, type | tuple[type, ...]], path: Path, what: str, error: type[SlmlabError], fix: str
) -> dict:
    """Check that `value` has each field with the given type(s) (bool is not a number here)."""
    for field, kinds in fields.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        item = value.get(field)
        wrong_bool = isinstance(item, bool) and bool not in kinds
        if field not in value or wrong_bool or not isinstance(item, kinds):
            got = "missing" if field not in value else f"a {type(item).__name__}"
            raise error(f"{what} {path} is damaged ('{field}' is {got}); {fix}")
    return value
