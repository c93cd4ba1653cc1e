"""A full disk and crash-safe writes (reliability issue, class 2): every file goes through one
atomic write (temp, fsync, rename); a write that fails for lack of space is an ENOSPC error naming
its file, leaves no part of itself behind, and keeps what was written before it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slmlab.errors import CheckpointError
from slmlab.files import remove_stale_temps
from slmlab.runs import RunDir
from slmlab.training import train


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_earlier_ones_and_resume_finishes_exactly(
    text_corpus, make_config, capsys, monkeypatch
):
    """torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] .
    unexpected pos": a traceback, and the new checkpoint's weights file stayed behind without its
    state. Now: one line, no part of that checkpoint left, the one before it intact, and resuming
    from it ends with the weights of a run that never stopped."""
    from safetensors.torch import load_file

    from slmlab import files
    from slmlab.runs.checkpoints import is_intact

    straight = make_config(text_corpus, train={"checkpoint_every": 5})
    straight.name = "straight"
    train(straight, progress=False)

    cfg = make_config(text_corpus, train={"checkpoint_every": 5})
    save = torch.save
    calls = []

    def fill_the_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the step-10 training state
            Path(path).write_bytes(b"\0" * 100)
            monkeypatch.setattr(files, "disk_full", lambda folder: True)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1981056 vs 1980944")
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_the_disk)
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint step_000010 could not be written in .* \(No space left on device\); the checkpoints before it are kept",
    ) as caught:
        train(cfg, progress=False)
    assert "\n" not in str(caught.value)
    checkpoints = RunDir.for_config(cfg).checkpoints
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "latest",
        "step_000005.safetensors",
        "step_000005.sha256.json",
        "step_000005.state.pt",
    ]
    assert (checkpoints / "latest").read_text() == "step_000005" and is_intact(checkpoints, "step_000005")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.undo()
    train(cfg, resume=True, progress=False)
    a = load_file(RunDir.for_config(straight).final_weights)
    b = load_file(RunDir.for_config(cfg).final_weights)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_writer_that_fails_on_a_full_disk_in_its_own_words_is_an_enospc_error(tmp_path, monkeypatch):
    import errno

    from slmlab import files

    def write(tmp):
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("basic_ios::clear: iostream error")

    with pytest.raises(RuntimeError, match="iostream"):  # with room on the disk, its own error stands
        files.atomic_write(tmp_path / "x.pt", write)
    monkeypatch.setattr(files, "disk_full", lambda folder: True)
    with pytest.raises(OSError) as caught:
        files.atomic_write(tmp_path / "x.pt", write)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []  # no temp file, no half file


def test_a_full_disk_while_tokenizing_is_one_line_and_leaves_no_build_behind(text_corpus, tmp_path, monkeypatch):
    """numpy's tofile said "7000016 requested and 1568768 written" (or "Not enough free space to
    write N bytes"), with no errno and no path."""
    import errno

    from slmlab.config import DataConfig
    from slmlab.data import tokens
    from slmlab.data.corpora import CorpusError

    def full(handle, parts, large=1 << 20):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tokens, "_append", full)
    cache = tmp_path / "cache"
    with pytest.raises(
        CorpusError,
        match=r"no space left on the device of .*tokens for the token files .*: free space, or set SLMLAB_CACHE \(or data.cache_dir\)",
    ):
        tokens.prepare_tokens(DataConfig(source=str(text_corpus), tokenizer="char", seq_len=16, cache_dir=str(cache)))
    assert [p.name for p in (cache / "tokens").iterdir() if not p.name.endswith(".lock")] == []


def test_token_arrays_reach_the_file_through_its_own_write():
    """So that a full disk is an OSError with errno ENOSPC (numpy's tofile gives none, and needs
    a real file)."""
    import io

    import numpy as np

    from slmlab.data.tokens import _append

    parts = [np.arange(n, dtype=np.uint16) for n in (3, 9, 2, 12, 1)]
    out = io.BytesIO()
    _append(out, parts, large=8)
    assert out.getvalue() == np.concatenate(parts).tobytes()


def test_a_writer_that_chooses_its_format_by_suffix_writes_atomically_and_its_stale_temp_is_removed(tmp_path):
    """matplotlib's animation writers pick GIF or MP4 by the file name, so `viz animate` wrote
    straight into training.gif: a full disk left half a GIF."""
    from slmlab import files

    seen = []
    files.atomic_write(
        tmp_path / "training.gif", lambda tmp: seen.append(tmp) or Path(tmp).write_bytes(b"GIF89a"), keep_suffix=True
    )
    assert seen[0].endswith(".tmp.gif") and (tmp_path / "training.gif").read_bytes() == b"GIF89a"
    stale = tmp_path / ".training.gif.999999999.abcd1234.tmp.gif"  # a killed writer's
    stale.write_bytes(b"half")
    assert remove_stale_temps(tmp_path) == [stale] and sorted(p.name for p in tmp_path.iterdir()) == ["training.gif"]


def test_a_write_that_fails_without_naming_its_file_is_named(tmp_path, monkeypatch):
    import errno

    from slmlab import files

    def write(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")  # as Python's own writes on a full disk

    with pytest.raises(OSError, match=r"No space left on device: '.*training\.gif'"):
        files.atomic_write(tmp_path / "training.gif", write)

    def numpy_write(tmp):
        raise OSError("7000016 requested and 1568768 written")  # numpy's tofile: no errno, no file

    monkeypatch.setattr(files, "disk_full", lambda folder: True)
    with pytest.raises(OSError, match=r"No space left on device: '.*tokens\.bin'"):
        files.atomic_write(tmp_path / "tokens.bin", numpy_write)
