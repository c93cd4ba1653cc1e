"""Verbs that take a model out of the lab: `export` (Hugging Face) and `lm-eval` (the harness)."""

from __future__ import annotations

from .options import add_verb


def register(sub) -> None:
    p = add_verb(
        sub,
        "export",
        "write a run as a Hugging Face model folder (native GPT-2/Llama where exact, else remote code) with its tokenizer",
        "  slmlab export runs/quickstart --to hf hf/quickstart          # GPT-2 layout: no remote code\n"
        "  slmlab export runs/modern_baseline --to hf hf/modern        # Llama layout\n"
        "  slmlab export runs/smat_quick/full_s0 --to hf hf/smat       # remote code (trust_remote_code=True)\n"
        "  python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('hf/quickstart')\"",
    )
    p.add_argument("run")
    p.add_argument("--to", choices=("hf",), required=True, help="the format (hf: a transformers model folder)")
    p.add_argument("out", metavar="OUT", help="the new folder to write")
    p.add_argument(
        "--layout",
        choices=("auto", "gpt2", "llama", "remote"),
        default="auto",
        help="auto: the native layout that fits exactly, else remote code (default)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args, extra) -> int:
    from ..config import ConfigError
    from ..export.hf import export_hf

    if extra:
        raise ConfigError(f"export takes no config overrides, got {' '.join(extra)}")
    print(export_hf(args.run, args.out, args.layout).describe())
    return 0
