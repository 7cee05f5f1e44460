"""The embedded default: a toy video world, tiny Wan models trained on it, and the DTS / SDVG benchmark.

`python -m bench --quick` (from the repo root) prints both tables and writes them, a plot and clip strips to
bench/results/ (git-ignored; the committed reference run is docs/bench-run/). Modules: world (clips, conditions
and the seed ranges), check (success check and per-frame quality), models (configs, loading, the denoiser
wrapper), train (training and the drafter's distillation), stats (intervals and paired tests), run (the benchmark).
"""
