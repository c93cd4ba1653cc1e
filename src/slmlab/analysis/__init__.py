"""Looking at models and runs: size and cost (info), attention (viz), int8 (quantize), report cards."""
