"""slmlab's benchmarks: run from the repository root.

python -m benchmarks all               every benchmark, one Markdown table (runs/bench.md)
python -m benchmarks.throughput        baseline tokens/s and MFU at two sizes, vs the stock loss
python -m benchmarks.smat_overhead     step time and memory of each SMAT variant vs the baseline
python -m benchmarks.attention_scaling full vs block-local attention at T = 1k..8k
python -m benchmarks.decoding          generate's tokens/s: cached, recomputing, batched, compiled
python -m benchmarks.step_overhead     slmlab's training loop against a minimal nanoGPT-style loop
python -m benchmarks.padded_prefill    a left-padded block-local prefill against the explicit mask
python -m benchmarks.profile_step      where a config's training step spends its time (torch.profiler)
bash benchmarks/cuda_session.sh        everything measured on a lent CUDA GPU, in one capped run
"""
