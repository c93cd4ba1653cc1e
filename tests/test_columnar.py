"""Parquet shards and `save_to_disk` datasets as corpora: streamed with pyarrow, columns mapped,
bad input refused in one line, and a run trains on them."""

from __future__ import annotations

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq

from slmlab.config import DataConfig
from slmlab.data.corpora import CorpusError, DocumentSelection, open_source
from slmlab.data.corpora.columnar import BATCH_ROWS, ColumnarSource

TEXTS = [f"Document number {i}: the quick brown fox jumps over the lazy dog {i % 7} times.\n" for i in range(2 * BATCH_ROWS + 5)]


@pytest.fixture
def shards(tmp_path):
    """Three Parquet shards in nested folders; the text under 'content', with id, year and genre."""
    folder = tmp_path / "fineweb"
    bounds = [0, 700, 1500, len(TEXTS)]
    for shard, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        table = pa.table(
            {
                "content": TEXTS[lo:hi],
                "id": [f"doc{i}" for i in range(lo, hi)],
                "year": [1900 + i % 100 for i in range(lo, hi)],
                "genre": ["even" if i % 2 == 0 else "odd" for i in range(lo, hi)],
                "score": [0.5] * (hi - lo),
            }
        )
        path = folder / f"part{shard // 2}" / f"shard_{shard:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=300)
    return folder


def test_parquet_shards_stream_every_row_in_order_with_metadata(shards):
    source = open_source(DataConfig(source=str(shards), text_field="content"))
    assert isinstance(source, ColumnarSource)
    docs = list(source.documents())
    assert [d.text for d in docs] == TEXTS
    assert [d.id for d in docs] == [f"doc{i}" for i in range(len(TEXTS))]
    assert docs[3].year == 1903 and docs[3].genre == "odd"


def test_row_ids_follow_the_shard_path_and_so_does_the_fingerprint(tmp_path):
    """A row without an id is 'path:row' below the folder: moving the shard changes its ids and
    split, so it must change the fingerprint that keys the token cache (it hashed names only)."""
    folder = tmp_path / "shards"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    pq.write_table(pa.table({"text": ["alpha beta", "gamma delta"]}), folder / "a" / "x.parquet")
    pq.write_table(pa.table({"text": ["epsilon"]}), folder / "b" / "y.parquet")
    before = open_source(DataConfig(source=str(folder)))
    assert [d.id for d in before.documents()] == ["a/x.parquet:0", "a/x.parquet:1", "b/y.parquet:0"]
    fingerprint = before.fingerprint()
    (folder / "a" / "x.parquet").rename(folder / "b" / "x.parquet")
    after = open_source(DataConfig(source=str(folder)))
    assert [d.id for d in after.documents()][:2] == ["b/x.parquet:0", "b/x.parquet:1"]
    assert after.fingerprint() != fingerprint


def test_hidden_shards_are_left_out_of_a_folder(shards):
    """A `.cache/` or `.ipynb_checkpoints/` copy of a shard would be read twice."""
    hidden = shards / ".ipynb_checkpoints" / "shard_000-checkpoint.parquet"
    hidden.parent.mkdir()
    hidden.write_bytes((shards / "part0" / "shard_000.parquet").read_bytes())
    docs = list(open_source(DataConfig(source=str(shards), text_field="content")).documents())
    assert [d.text for d in docs] == TEXTS


def test_a_folder_of_shards_says_which_other_files_it_leaves_out(shards, caplog):
    """A folder holding .parquet shards reads them alone: a .txt beside them was left out in
    silence (the same folder without shards would have read it)."""
    (shards / "README.md").write_text("# a dataset card")
    (shards / "part0" / "extra.txt").write_text("text " * 50)
    docs = list(open_source(DataConfig(source=str(shards), text_field="content")).documents())
    assert [d.text for d in docs] == TEXTS
    assert "2 files left out (e.g. README.md, part0/extra.txt): a folder contributes its .parquet shards alone" in caplog.text


def test_a_glob_of_parquet_shards_is_read_as_parquet(shards):
    source = open_source(DataConfig(source=str(shards / "**" / "*.parquet"), text_field="content"))
    assert isinstance(source, ColumnarSource)
    docs = list(source.documents())
    assert [d.text for d in docs] == TEXTS and docs[0].id == "doc0"


def test_parquet_filters_apply_like_any_source(shards):
    selection = DocumentSelection(DataConfig(source=str(shards), text_field="content", genres=["even"], max_year=1950))
    docs = list(selection)
    assert docs and all(d.genre == "even" and d.year <= 1950 for d in docs)
    assert selection.dropped_by_year > 0


def test_single_parquet_file_without_optional_columns_gets_row_ids(tmp_path):
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"text": ["alpha beta", "", None, "gamma delta"]}), path)
    docs = list(open_source(DataConfig(source=str(path))).documents())
    assert [(d.id, d.text, d.year, d.genre) for d in docs] == [
        ("one.parquet:0", "alpha beta", None, ""),
        ("one.parquet:3", "gamma delta", None, ""),
    ]


def test_parquet_is_read_batch_by_batch(shards, monkeypatch):
    """Streaming: no call ever reads a whole file into one table."""
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read the whole file"))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read the whole table"))
    assert sum(1 for _ in open_source(DataConfig(source=str(shards), text_field="content")).documents()) == len(TEXTS)


def test_saved_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = datasets.Dataset.from_dict({"text": TEXTS[:50], "genre": ["a"] * 50})
    single.save_to_disk(str(tmp_path / "single"))
    docs = list(open_source(DataConfig(source=str(tmp_path / "single"))).documents())
    assert [d.text for d in docs] == TEXTS[:50] and docs[0].genre == "a"

    both = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"body": TEXTS[:30]}), test=datasets.Dataset.from_dict({"body": TEXTS[30:40]})
    )
    both.save_to_disk(str(tmp_path / "dict"))
    docs = list(open_source(DataConfig(source=str(tmp_path / "dict"), text_field="body")).documents())
    assert [d.text for d in docs] == TEXTS[:40]
    assert docs[0].id.startswith("train/") and docs[-1].id.startswith("test/")


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: pq.write_table(pa.table({"body": ["x"]}), p / "a.parquet") or str(p / "a.parquet"),
            "no column 'text'.*body.*data.text_field",
        ),
        (lambda p: pq.write_table(pa.table({"text": [1, 2]}), p / "a.parquet") or str(p / "a.parquet"), "holds int, not text"),
        (lambda p: pq.write_table(pa.table({"text": ["  ", ""]}), p / "a.parquet") or str(p / "a.parquet"), "contains no text"),
        (lambda p: (p / "a.parquet").write_bytes(b"not parquet at all") and str(p / "a.parquet"), "not a readable parquet file"),
        (
            lambda p: pq.write_table(pa.table({"text": ["x"], "year": ["soon"]}), p / "a.parquet") or str(p / "a.parquet"),
            "row 0: year 'soon'",
        ),
        (  # it was a KeyError from pyarrow
            lambda p: (
                pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), p / "a.parquet")
                or str(p / "a.parquet")
            ),
            "names the column 'text' more than once",
        ),
        (lambda p: (p / "state.json").write_text('{"_data_files": []}') and str(p), "lists no data files"),
        (
            lambda p: (p / "state.json").write_text('{"_data_files": [{"filename": "gone.arrow"}]}') and str(p),
            "missing .*gone.arrow",
        ),
    ],
)
def test_bad_columnar_input_is_one_clear_error(tmp_path, make, message):
    spec = make(tmp_path)
    with pytest.raises(CorpusError, match=message):
        list(open_source(DataConfig(source=spec)).documents())


@pytest.mark.slow
def test_a_run_trains_on_parquet_shards(shards, tmp_path):
    from slmlab.config import ModelConfig, RunConfig, TrainConfig
    from slmlab.training import train

    cfg = RunConfig(
        name="pq",
        out_dir=str(tmp_path / "runs"),
        model=ModelConfig(n_layer=1, n_head=2, d_model=32, block_size=32),
        data=DataConfig(
            source=str(shards), text_field="content", tokenizer="byte", seq_len=32, cache_dir=str(tmp_path / "cache")
        ),
        train=TrainConfig(
            steps=40,
            batch_size=8,
            lr=3e-3,
            warmup_steps=5,
            eval_every=20,
            eval_batches=2,
            log_every=10,
            checkpoint_every=0,
            sample_tokens=0,
        ),
    )
    result = train(cfg)
    assert result.val_loss < 4.0  # ln 256 = 5.55 at init: the repetitive text is being learned


def test_parquet_labels_read_as_json_records_do(tmp_path):
    """pandas writes a missing id in a float column as NaN: it was the id "nan" for every such row.
    A list-valued genre column became streams named "['a']"."""
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["one", "two"], "id": [1.0, float("nan")], "genre": ["a", None]}), path)
    docs = list(DocumentSelection(DataConfig(source=str(path))))
    assert [(d.id, d.genre) for d in docs] == [("1.0", "a"), ("d.parquet:1", "")]
    pq.write_table(pa.table({"text": ["one"], "genre": [["a"]]}), path)
    with pytest.raises(CorpusError, match=r"d.parquet row 0: field 'genre' holds an array, not text"):
        list(DocumentSelection(DataConfig(source=str(path))))
