"""Evaluation: test metrics, the baselines, the benchmark's timing helpers."""
