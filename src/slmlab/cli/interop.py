"""Verbs that take a model out of the lab: `export` (Hugging Face) and `lm-eval` (the harness)."""

from __future__ import annotations

from .argument_types import non_negative_int, output_folder, positive_int
from .options import add_device, add_verb


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
    p.add_argument("out", metavar="OUT", type=output_folder, help="the new folder to write")
    p.add_argument(
        "--layout",
        choices=("auto", "gpt2", "llama", "remote"),
        default="auto",
        help="auto: the native layout that fits exactly, else remote code (default)",
    )
    p.set_defaults(func=cmd_export)

    p = add_verb(
        sub,
        "lm-eval",
        "score a run with lm-evaluation-harness tasks (offline; slmlab_cloze is built from the run's held-out text)",
        "  slmlab lm-eval runs/quickstart --tasks slmlab_cloze\n"
        "  slmlab lm-eval runs/quickstart --tasks slmlab_cloze --limit 100 --batch-size 32\n"
        "  slmlab lm-eval runs/bpe --tasks lambada_openai --include-path my_tasks/   # datasets already in the local HF cache",
    )
    p.add_argument("run")
    p.add_argument(
        "--tasks", required=True, help="comma-separated task names (slmlab_cloze, or any task lm-eval can read offline)"
    )
    p.add_argument("--limit", type=non_negative_int, default=0, help="examples per task (0 = all)")
    p.add_argument(
        "--num-fewshot", type=non_negative_int, default=None, help="examples before each question (default: the task's own)"
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences scored together (default 16)")
    p.add_argument("--include-path", default="", help="a folder of your own task YAMLs")
    add_device(p)
    p.set_defaults(func=cmd_lm_eval)


def cmd_export(args, extra) -> int:
    from ..export.hf import export_hf

    print(export_hf(args.run, args.out, args.layout).describe())
    return 0


def cmd_lm_eval(args, extra) -> int:
    from ..evals.harness import evaluate_run, results_path

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    _, table = evaluate_run(args.run, tasks, args.limit, args.num_fewshot, args.batch_size, args.device, args.include_path)
    print(table)
    print(f"saved: {results_path(args.run)}")
    return 0
