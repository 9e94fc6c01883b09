"""Benchmarks and seed sweeps behind the README's tables (run each as a script or with python -m)."""
