"""slmlab's benchmarks: run from the repository root.

python -m benchmarks all               every benchmark, one Markdown table (runs/bench.md)
python -m benchmarks.throughput        baseline tokens/s and MFU at two sizes, vs the stock loss
python -m benchmarks.smat_overhead     step time and memory of each SMAT variant vs the baseline
python -m benchmarks.attention_scaling full vs block-local attention at T = 1k..8k
"""
