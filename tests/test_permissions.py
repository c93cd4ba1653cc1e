"""Files and folders this user may not read, list or change: one line naming the path, whether it
was read or written and what to change; a folder corpus or glob never leaves an unlistable folder's
files out in silence; --overwrite of a run it cannot delete from deletes nothing.

Root may read and write anything, so where these tests run as root (CI) the permission a folder
lacks is simulated (os.access, os.scandir, mkstemp failing as the kernel fails them); the last test
repeats the whole journey with real permissions wherever it runs as another user."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slmlab.cli import main
from slmlab.cli.os_errors import os_error_message
from slmlab.data.corpora.fetch import cache_location
from slmlab.data.corpora.listing import corpus_files, glob_files
from slmlab.errors import ConfigError, CorpusError
from slmlab.runs import RunDir


def _denied(path) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def _lacking(monkeypatch, path: Path, *modes: int) -> None:
    """os.access answers as if this user lacked `modes` on `path` (and has every other)."""
    access = os.access

    def answer(where, mode, *args, **kwargs):
        if Path(where).resolve() == path.resolve() and any(mode & m for m in modes):
            return False
        return access(where, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", answer)


def _unlistable(monkeypatch, folder: Path) -> None:
    """os.scandir (which os.walk and glob call) fails on `folder` as on a folder of mode 0o000."""
    scandir = os.scandir

    def listing(where="."):
        if Path(where).resolve() == folder.resolve():
            raise _denied(where)
        return scandir(where)

    monkeypatch.setattr(os, "scandir", listing)


def test_a_file_it_may_not_read_is_named_as_read(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("text")
    _lacking(monkeypatch, corpus, os.R_OK)
    message = os_error_message(_denied(corpus))
    assert message.startswith(f"cannot read {corpus}: permission denied for this user; change its permissions")
    assert "Errno" not in message


def test_a_file_in_a_folder_it_may_not_write_names_the_folder_and_the_option_that_chose_it(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    _lacking(monkeypatch, runs, os.W_OK)
    monkeypatch.setenv("SLMLAB_CACHE", str(tmp_path / "cache"))
    message = os_error_message(_denied(runs / "a" / "config.json"), ["--out_dir"])
    assert message == (
        f"cannot write {runs / 'a' / 'config.json'}: the folder {runs} is not writable for this user; change its "
        "permissions (chmod, chown) or give another --out_dir"
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    _lacking(monkeypatch, cache, os.W_OK)
    assert os_error_message(_denied(cache / "tokens")).endswith(
        "or set SLMLAB_CACHE (or data.cache_dir) to a folder you can write"
    )
    configured = tmp_path / "configured_cache"  # data.cache_dir in a config: it said "give another --out_dir"
    cache_location(str(configured))
    _lacking(monkeypatch, tmp_path, os.W_OK)
    assert os_error_message(_denied(configured), ["--out_dir"]).endswith(
        "or set SLMLAB_CACHE (or data.cache_dir) to a folder you can write"
    )
    monkeypatch.setenv("SLMLAB_CACHE", str(tmp_path / "home" / ".cache" / "slmlab"))  # a HOME it may not make
    assert os_error_message(_denied(tmp_path / "home"), ["--out_dir"]).endswith(
        "or set SLMLAB_CACHE (or data.cache_dir) to a folder you can write"
    )


def test_a_sweep_that_cannot_write_its_folder_names_its_config_s_out_dir(tmp_path, monkeypatch):
    """It said "give another --out_dir", which a sweep's command line may not set."""
    from slmlab.cli.main import build_parser
    from slmlab.cli.os_errors import output_arguments

    _lacking(monkeypatch, tmp_path, os.W_OK)
    outputs = output_arguments(build_parser().parse_args(["sweep", "s.toml"]))
    assert os_error_message(_denied(tmp_path / "sweeps"), outputs).endswith("or give another out_dir in the sweep's config")
    assert output_arguments(build_parser().parse_args(["sweep", "s.toml", "--slurm", "s.sh"])) == ["--slurm"]
    assert output_arguments(build_parser().parse_args(["train", "c.toml"])) == ["--out_dir"]


def test_a_folder_it_may_not_enter_is_named_before_what_lies_in_it(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    _lacking(monkeypatch, runs, os.X_OK)
    message = os_error_message(_denied(runs / "a" / "config.json"))
    assert message.startswith(f"cannot reach {runs / 'a' / 'config.json'}: this user may not enter the folder {runs};")


@pytest.mark.parametrize(
    ("number", "says"),
    [
        (errno.EROFS, "its file system is read-only; give another --out"),
        (errno.ENOSPC, "no space left on its disk; free some space or give another --out"),
        (errno.EISDIR, "is a folder where a file is needed"),
        (errno.ENOTDIR, "a file stands where a folder is needed); give another --out"),
        (errno.ENAMETOOLONG, "the name is too long for the file system"),
        (errno.ENOENT, "no such file or folder; check the path"),
    ],
)
def test_other_file_system_errors_say_what_to_change(number, says, tmp_path):
    message = os_error_message(OSError(number, os.strerror(number), str(tmp_path / "x")), ["--out"])
    assert says in message and str(tmp_path / "x") in message and "Errno" not in message


def test_a_file_named_as_the_cache_says_to_set_slmlab_cache(tmp_path, monkeypatch, capsys):
    """SLMLAB_CACHE naming a file was told to "choose another path", not which setting chose it."""
    from slmlab.cli.main import main

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("SLMLAB_CACHE", str(tmp_path / "afile"))
    assert main(["data", "download"]) == 2
    assert "set SLMLAB_CACHE (or data.cache_dir) to a folder" in capsys.readouterr().err


def test_a_write_refused_by_its_folder_is_named_by_the_file_not_its_temp_file(micro_toml, tmp_path, capsys, monkeypatch):
    """mkstemp's error named '.config.json.25396.2fpnrz3d.tmp', a file the user never asked for."""
    import tempfile

    mkstemp = tempfile.mkstemp

    def refuse(*args, dir=None, prefix="", **kwargs):
        if not prefix.startswith(".config.json."):
            return mkstemp(*args, dir=dir, prefix=prefix, **kwargs)
        raise _denied(Path(dir) / f"{prefix}abc.tmp")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["train", str(micro_toml), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slmlab: error: {tmp_path / 'runs' / 'base' / 'config.json'}: permission denied for this user")
    assert ".tmp" not in err and err.count("\n") == 1


def test_a_folder_corpus_refuses_a_subfolder_it_cannot_list(tmp_path, monkeypatch):
    """os.walk and rglob skip such a folder without a word: the run trained on less text."""
    (tmp_path / "corpus" / "more").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("a")
    (tmp_path / "corpus" / "more" / "b.txt").write_text("b")
    (tmp_path / "corpus" / ".git").mkdir()
    _unlistable(monkeypatch, tmp_path / "corpus" / ".git")  # hidden: never read, never refused
    assert [p.name for p in corpus_files(tmp_path / "corpus", None)] == ["a.txt", "b.txt"]
    _unlistable(monkeypatch, tmp_path / "corpus" / "more")
    with pytest.raises(CorpusError, match=r"cannot list the folder .*more \(permission denied\): its files would be left out"):
        corpus_files(tmp_path / "corpus", None)


@pytest.mark.parametrize(
    ("pattern", "refused"),
    [
        ("corpus/**/*.txt", True),
        ("corpus/*/*.txt", True),
        ("corpus/m*/b.txt", False),  # looks b.txt up without listing: needs only search permission
        ("corpus/*.txt", False),  # lists corpus only
        ("corpus/x*/*.txt", False),  # never enters 'more'
        ("corpus/*/.hidden/*.txt", False),
    ],
)
def test_a_glob_refuses_a_folder_it_would_list_but_cannot(pattern, refused, tmp_path, monkeypatch):
    (tmp_path / "corpus" / "more").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("a")
    (tmp_path / "corpus" / "more" / "b.txt").write_text("b")
    monkeypatch.chdir(tmp_path)
    _unlistable(monkeypatch, tmp_path / "corpus" / "more")
    if refused:
        with pytest.raises(
            CorpusError, match=rf"cannot list the folder corpus/more .*the glob '{re.escape(pattern)}' would leave"
        ):
            glob_files(pattern)
    else:
        glob_files(pattern)


def test_a_glob_through_a_folder_it_cannot_enter_is_refused(tmp_path, monkeypatch):
    (tmp_path / "corpus" / "more").mkdir(parents=True)
    (tmp_path / "corpus" / "more" / "b.txt").write_text("b")
    _lacking(monkeypatch, tmp_path / "corpus" / "more", os.X_OK)
    with pytest.raises(CorpusError, match=r"cannot enter the folder .*more .*cannot find its files"):
        glob_files(str(tmp_path / "corpus" / "m*" / "b.txt"))


def _trained(micro_toml, tmp_path) -> RunDir:
    assert main(["train", str(micro_toml), "--no-progress", "--name", "a"]) == 0
    return RunDir(tmp_path / "runs" / "a")


def test_overwrite_of_a_run_it_may_not_delete_from_deletes_nothing(micro_toml, tmp_path, capsys, monkeypatch):
    run = _trained(micro_toml, tmp_path)
    before = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
    _lacking(monkeypatch, run.checkpoints, os.W_OK)
    assert main(["train", str(micro_toml), "--no-progress", "--name", "a", "--overwrite"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"slmlab: error: cannot overwrite {run.path}: this user may not delete files in {run.checkpoints}; "
        "change its permissions (chmod, chown) or pick another --name"
    )
    assert sorted(p.relative_to(run.path) for p in run.path.rglob("*")) == before


def test_an_overwrite_stopped_half_way_leaves_a_run_it_can_overwrite_again(micro_toml, tmp_path, capsys, monkeypatch):
    """config.json went with the first files: what was left was 'files that are not a slmlab run',
    which --overwrite then refused to touch."""
    run = _trained(micro_toml, tmp_path)
    rmtree = shutil.rmtree

    def stopped(path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", stopped)  # Ctrl-C while deleting the checkpoints
    with pytest.raises(KeyboardInterrupt):
        run.remove_owned()
    assert run.config.is_file()
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert main(["train", str(micro_toml), "--no-progress", "--name", "a", "--overwrite"]) == 0


def test_remove_owned_refuses_before_deleting_when_the_run_folder_itself_is_read_only(micro_toml, tmp_path, monkeypatch):
    run = _trained(micro_toml, tmp_path)
    _lacking(monkeypatch, run.path, os.W_OK)
    with pytest.raises(ConfigError, match="may not delete files in"):
        run.remove_owned()
    assert run.config.is_file() and run.final_weights.is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes through any permission")
def test_real_permissions_end_to_end(micro_toml, tmp_path):
    """The same refusals with real modes, through the command line."""
    slmlab = [sys.executable, "-m", "slmlab"]

    def run(*argv) -> str:
        done = subprocess.run([*slmlab, *argv], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Errno" not in done.stderr and "Traceback" not in done.stderr
        return done.stderr

    (tmp_path / "ro").mkdir(mode=0o555)
    assert "the folder" in run("train", str(micro_toml), "--out_dir", str(tmp_path / "ro"), "--no-progress")
    corpus = tmp_path / "corpus"
    (corpus / "more").mkdir(parents=True)
    (corpus / "a.txt").write_text("some text " * 200)
    (corpus / "more" / "b.txt").write_text("more text " * 200)
    (corpus / "more").chmod(0)
    try:
        assert "cannot list the folder" in run("train", str(micro_toml), "--data.source", str(corpus), "--no-progress")
    finally:
        (corpus / "more").chmod(0o755)


def _read_only(monkeypatch, folder: Path) -> None:
    """Files cannot be made in `folder` (mkstemp fails as the kernel fails it), and os.access says so."""
    import tempfile

    for name in ("mkstemp", "mkdtemp"):
        make = getattr(tempfile, name)

        def refuse(*args, dir=None, prefix="", make=make, **kwargs):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise _denied(Path(dir) / f"{prefix}abc.tmp")
            return make(*args, dir=dir, prefix=prefix, **kwargs)

        monkeypatch.setattr(tempfile, name, refuse)
    _lacking(monkeypatch, folder, os.W_OK)


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["ablate", "{run}", "--layers"], "or copy the run {run} to a folder you can write and give the copy"),
        (["prompts", "{run}", "--suite", "{suite}", "--out", "{run}/p.md"], "or give another --out"),
        (["tokenizer", "train", "{config}", "--out", "{ro}/t.json"], "or give another --out"),
        (["export", "{run}", "{ro}/hf", "--to", "hf"], "or give another OUT"),  # it named its staging folder
    ],
)
def test_a_read_only_run_folder_names_the_argument_that_writes_elsewhere(argv, hint, micro_toml, tmp_path, capsys, monkeypatch):
    run = _trained(micro_toml, tmp_path)
    suite = tmp_path / "suite.toml"
    suite.write_text('[[prompt]]\nid = "a"\nprompt = "th"\nmax_tokens = 2\n')
    folder = tmp_path / "ro" if any("{ro}" in arg for arg in argv) else run.path
    folder.mkdir(exist_ok=True)
    names = {"run": run.path, "ro": folder, "suite": suite, "config": micro_toml}
    argv = [arg.format(**names) for arg in argv]
    _read_only(monkeypatch, folder)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"the folder {folder} is not writable for this user" in err
    assert err.strip().endswith(hint.format(**names)) and "abc.tmp" not in err  # named by what it writes, not a temp name


def test_another_user_s_lock_file_in_a_shared_cache_still_locks(tmp_path, monkeypatch):
    """A lab's shared cache: the lock file beside a token cache was made by the user who built
    it (0o644), and every other user failed to open it for writing: 'Permission denied' for a
    cache they could read. It is opened for reading then, which flock needs no more than."""
    from slmlab.errors import RunInUseError
    from slmlab.locks import DirectoryLock

    DirectoryLock(tmp_path / "tokens").acquire().release()  # the first user's lock file
    opened = os.open

    def another_user(path, flags, *args):
        if flags & os.O_RDWR and Path(path).name == ".tokens.lock":
            raise _denied(path)
        return opened(path, flags, *args)

    monkeypatch.setattr(os, "open", another_user)
    with DirectoryLock(tmp_path / "tokens", "token cache"):
        monkeypatch.setattr(os, "open", opened)  # a third process, which may write the file
        with pytest.raises(RunInUseError, match="the token cache .* is in use by process"):
            DirectoryLock(tmp_path / "tokens", "token cache").acquire()
    DirectoryLock(tmp_path / "tokens").acquire().release()  # given back when the holder closed it
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(os, "open", another_user)
    with pytest.raises(PermissionError):  # a lock file it may not make is still an error
        DirectoryLock(tmp_path / "runs" / "tokens").acquire()


def test_another_user_s_stale_temp_file_that_cannot_be_deleted_is_left(tmp_path, monkeypatch):
    """Clearing a killed writer's temp files is housekeeping: one this user may not delete (another
    user's, in a shared cache) stopped every run that built token files there."""
    from slmlab.files import remove_stale_temps

    theirs, ours = tmp_path / ".build.999999999.ab12.tmp", tmp_path / ".config.json.999999998.cd34.tmp"
    theirs.write_bytes(b"half")
    ours.write_bytes(b"half")
    unlink = Path.unlink

    def guarded(path, *args, **kwargs):
        if path == theirs:
            raise _denied(path)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", guarded)
    assert remove_stale_temps(tmp_path) == [ours]
    assert theirs.exists() and not ours.exists()
