"""Evaluations of trained runs: long context, prompt suites, surgical ablations, diagnostics."""
