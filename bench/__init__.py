"""Benchmarks. Each prints a markdown table that docs/benchmarks.md quotes; raw numbers go to bench/results/."""
