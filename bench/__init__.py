"""Benchmarks. Each prints a markdown table that README quotes; raw numbers go to bench/results/."""
