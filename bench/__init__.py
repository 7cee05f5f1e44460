"""The embedded default: a toy video world, tiny Wan models trained on it, and the DTS / SDVG benchmark.

`python -m bench --quick` (from the repo root) prints both tables and writes them, a plot and clip strips to
bench/results/. Modules: world (clips and conditions), check (success check and per-frame quality), models
(configs, loading, the denoiser wrapper), train (training script), run (the benchmark).
"""
