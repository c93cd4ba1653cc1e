"""The house rules the tree must keep: imports point down the pipeline (read from the code's own
import statements), and the CLI answers --help without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "slmlab"
# lower layers first; a module may import its own layer or any layer below it
LAYERS = {
    "errors": 0, "files": 0, "locks": 0, "tables": 0, "plotting": 0, "phase_progress": 0, "torchrun_env": 0, "host_memory": 0, "interruptible": 0, "registry": 1, "plugins": 1, "config": 2, "data": 3, "model": 4, "variants": 5,
    "runs": 6, "training": 7, "experiments": 8, "evals": 9, "persona": 9, "analysis": 9, "export": 9, "cli": 10,
}  # fmt: skip


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _imports(path: Path) -> list[str]:
    """Absolute slmlab modules imported by a file (relative imports resolved)."""
    package = ["slmlab", *path.relative_to(SRC).with_suffix("").parts]
    if package[-1] == "__init__":
        package = package[:-1]
    else:
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
                if not node.module:
                    found += [".".join([*base, alias.name]) for alias in node.names]
            elif node.module and node.module.startswith("slmlab"):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("slmlab")]
    return found


def test_imports_point_down_the_pipeline():
    upward = []
    for path in SRC.rglob("*.py"):
        own = _layer("slmlab." + ".".join(path.relative_to(SRC).with_suffix("").parts))
        if own not in LAYERS:
            continue
        for module in _imports(path):
            target = _layer(module)
            if target in LAYERS and LAYERS[target] > LAYERS[own]:
                upward.append(f"{path.relative_to(ROOT)} -> {module}")
    assert not upward, upward


def test_model_never_imports_variants_and_benchmarks_never_import_tests():
    for path in (SRC / "model").rglob("*.py"):
        assert not any(_layer(m) == "variants" for m in _imports(path)), path
    for path in (ROOT / "benchmarks").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any(name.split(".")[0] == "tests" for name in names), path


def test_help_and_version_answer_without_importing_torch():
    code = (
        "import sys\nfrom slmlab.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO TORCH") and "slmlab 0.1.0" in out


def test_the_library_loads_without_torchdynamo_or_distributed_checkpointing():
    """TorchDynamo (with sympy) takes ~1.2 s to import and torch.distributed.checkpoint ~0.7 s,
    together half of `slmlab generate` on a small run: block_local imported the first for SDPA's
    causal bias, training.distributed the second, at module level. Each loads when first needed
    (a model compiles, a block-local layer runs, a checkpoint gathers its state)."""
    code = (
        "import sys\nimport slmlab.evals.score, slmlab.training, slmlab.analysis.info, slmlab.variants\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch.distributed.checkpoint') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_name_imported_from_slmlab_exists():
    """Benchmarks and examples are not imported by the tests; a moved function must not strand them."""
    import importlib

    missing = []
    for folder in ("src", "benchmarks", "examples", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("slmlab")):
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
    assert not missing, missing
