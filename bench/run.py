"""The benchmark: DTS and SDVG against their baselines on the toy world's tiny models, in one run.

Every figure is measured in this run and also given as a ratio to its baseline from the same run:
- DTS (one model as an ordinary denoiser of the whole clip), in three worlds (DTS_WORLDS): the star world (model
  target_stars; the condition leaves the stars of the background open, and few-step Euler smears them: the hard
  case), the beacon world (model target_beacon; one late-settled choice per frame, shaped like the paper's
  benchmarks) and the default world (model target). Euler-100 (baseline), Euler-50 (= plain Euler on DTS's target
  grid), Euler-10, DTS at its default (sample_dts's and the nodes': the tolerance rule), DTS with the paper's
  distance rule in size-independent units (strides 10/2, chunk 6, rms threshold 0.0375 and increment 0.005 = the
  paper's L2 11 and 1.5 on 7x3x64x64 frames), sweeps over the chunk, the threshold and the target stride (star
  world), and DTS settings again in auto mode (one auto_memory per model for the whole run, as a ComfyUI server
  keeps one per loaded model). All DTS runs use the same 100-step fine schedule as Euler-100.
- SDVG (block-autoregressive with KV caches, default world): target-only (tau = +inf, baseline), draft-only
  (tau = -inf), SDVG at several tau (chosen on CHOICE_SEEDS) with the world's analytic quality score as the
  router, and the success check itself as the router (the bound); costs in DiT FLOPs and target forwards from
  speculative_generate's stats next to CPU wall; the router's rank correlation with success.

Seeds: the tables use REPORT_SEEDS (bench/world.py), on which nothing was chosen; `--seeds choice` runs the same
on CHOICE_SEEDS. Every success rate carries its 95 % Wilson interval and seed count, and its paired (same seeds)
exact McNemar test against the baseline (bench/stats.py).

Columns say what transfers to other hardware: `calls` are sequential model invocations (the latency on hardware
that runs a batch in the time of one sample), `evals` are per-sample evaluations (the compute); `wall` is CPU wall
time on this machine, where a batch of K costs about K times one sample, so DTS's CPU wall time does NOT show the
latency it saves on a GPU.
"""
import inspect
import json
import math
import multiprocessing
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from samplers.methods.dts import DEFAULT_ATOL, DEFAULT_RTOL, sample_dts
from samplers.methods.sdvg import speculative_generate

from .check import IdentityDecoder, WorldRouter, analyse, frame_passes
from .models import (DRAFTER_SIGMAS, FlowDenoiser, PositionalCausalRunner, euler_sample, flow_sigmas,
                     load_model)
from .stats import mcnemar, rate, wilson
from .world import (BEACON_WORLD, CHOICE_SEEDS, DEFAULT_WORLD, REPORT_SEEDS, STAR_WORLD, latent_to_frames,
                    sample_clip)

# The main job's output: git-ignored (a run never dirties the checkout). The committed reference run is docs/bench-run/.
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SEED_RANGES = {"report": REPORT_SEEDS, "choice": CHOICE_SEEDS}

# DTS: the paper's strides and chunk; its L2 threshold 11 and increment 1.5 (7 RGB frames of 64x64) as per-value
# RMS, which means the same on this 3x12x16x16 latent (docs/dts.md, "Tuning the threshold").
FINE_STEPS = 100
SHIFT = 3.0  # Wan-style shift of the flow schedule (more steps at high noise)
DTS_PAPER = dict(draft_stride=10, target_stride=2, chunk=6, threshold=0.0375, increment=0.005, metric="rms",
                 rule="distance")  # the paper's rule (the nodes default to "tolerance")
# DTS at its default: sample_dts's own defaults (the nodes' too): the paper's strides and chunk, the tolerance rule
DTS_DEFAULT_NAME = f"DTS default (tolerance, rtol {DEFAULT_RTOL:g})"
# The DTS worlds, in table order: (key, title, model, world, Settings field with its seed count, Settings field
# saying whether it runs the sweeps) (bench/world.py describes the worlds)
DTS_WORLDS = (("stars", "star world", "target_stars", STAR_WORLD, "dts_seeds", None),
              ("beacon", "beacon world", "target_beacon", BEACON_WORLD, "beacon_dts_seeds", "beacon_world_sweeps"),
              ("default", "default world", "target", DEFAULT_WORLD, "default_dts_seeds", "default_world_sweeps"))
# SDVG: the drafter runs its 4 sigmas (DRAFTER_SIGMAS, the ones it is trained at), the target 10 evenly spaced.
TARGET_SIGMAS = tuple(float(s) for s in flow_sigmas(10)[:-1])


@dataclass
class Settings:
    """What one benchmark run measures. `quick()` is the README's main-job command, `tiny()` the test's.

    DTS runs in three worlds (DTS_WORLDS): the star world (`STAR_WORLD`, model target_stars: few-step sampling
    fails there) with the chunk / threshold / target-stride sweeps and an auto row per DTS setting, the beacon and
    the default worlds with their `*_world_sweeps` or only Euler, DTS's default, the paper's setting and its auto
    row. `seeds` names the seed range (bench/world.py): "report" (the tables) or "choice" (where checkpoints, taus
    and thresholds are chosen).
    `workers` processes share the seeds (each with `threads` torch threads)."""
    dts_seeds: int = 32
    beacon_dts_seeds: int = 32
    default_dts_seeds: int = 32
    sdvg_seeds: int = 48
    euler_steps: tuple = (100, 50, 10)
    convergence_steps: int = 200  # Euler-200: is Euler-100 converged? (success only, batched over seeds, untimed)
    chunks: tuple = (2, 4, 6, 8, 10)
    thresholds: tuple = (0.0002, 0.0005, 0.002, 0.01, 0.1)  # rms; the first round's drafts lie 1e-4 to 1e-3 away
    # (target_stride, threshold) rows; stride 1: the target solves Euler-100's own grid
    target_strides: tuple = ((1, 0.0375), (1, 0.001), (1, 0.0005))
    default_world_sweeps: bool = True
    beacon_world_sweeps: bool = True
    auto_rows: bool = True  # every DTS setting again in auto mode (quick: the paper's and target stride 1 only)
    taus: tuple = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # chosen on CHOICE_SEEDS (docs/bench.md)
    seeds: str = "report"
    threads: int = 1
    workers: int = 2
    sdvg: bool = True
    dts: bool = True
    label: str = "full"

    @property
    def seed_range(self):
        if self.seeds not in SEED_RANGES:
            raise ValueError(f"Settings.seeds must be one of {sorted(SEED_RANGES)} (got {self.seeds!r})")
        return SEED_RANGES[self.seeds]

    @property
    def seed_offset(self):
        return self.seed_range.start

    def seed(self, index):
        return self.seed_range[index]

    @classmethod
    def quick(cls):
        return cls(dts_seeds=32, beacon_dts_seeds=32, default_dts_seeds=32, sdvg_seeds=32, chunks=(6,),
                   thresholds=(0.0005,), target_strides=((1, 0.001),), default_world_sweeps=False,
                   beacon_world_sweeps=False, auto_rows=False,
                   taus=(0.7, 0.85, 0.95), label="quick")

    @classmethod
    def tiny(cls):
        return cls(dts_seeds=1, beacon_dts_seeds=1, default_dts_seeds=1, sdvg_seeds=1, chunks=(6,),
                   thresholds=(0.0375,), target_strides=(), default_world_sweeps=False, beacon_world_sweeps=False,
                   taus=(0.7,), convergence_steps=0, workers=1, label="tiny")


# ------------------------------------------------------------------------------------------------------------
# Worker processes: the seeds of a table are shared by `Settings.workers` processes (spawned, each loads the
# models once by name); with one worker everything runs in this process.

_MODELS = {}  # per process: the benchmark's models by name
_AUTO_MEMORY = {}  # per process and model: DTS auto's memory (a ComfyUI server keeps one per loaded model)


def _model(name):
    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def _init_worker(threads):
    torch.set_num_threads(threads)


def _call(job):
    function, kwargs = job
    return function(**kwargs)


def map_jobs(jobs, workers, threads):
    """[function(**kwargs) for function, kwargs in jobs], in `workers` spawned processes when > 1 (in order)."""
    if workers <= 1 or len(jobs) <= 1:
        return [_call(job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(threads,)) as pool:
        return pool.map(_call, jobs, chunksize=1)


def _clock():
    return time.perf_counter()


# ------------------------------------------------------------------------------------------------------------
# DTS

def dts_methods(settings, sweeps=True):
    """[(name, kind, options)] in table order; kind "euler" (options: steps) or "dts" (sample_dts options).

    Row names give every option that differs from the paper's setting (DTS_PAPER) and always the increment. With
    `settings.auto_rows` every DTS setting is followed by the same setting in auto mode (sample_dts(auto=True)),
    otherwise only the paper's and the target-stride ones; an auto row's wall time is compared with plain Euler
    on the same target grid (stride 2 of the 100-step schedule: Euler-50)."""
    methods = [(f"Euler-{n}", "euler", dict(steps=n)) for n in settings.euler_steps]
    methods.append((DTS_DEFAULT_NAME, "dts", {}))
    paper = dict(DTS_PAPER)
    increment = f"inc {paper['increment']:g}"
    settings_list = [(f"DTS paper (chunk {paper['chunk']}, thr {paper['threshold']:g}, {increment})", paper)]
    if sweeps:
        settings_list += [(f"DTS chunk {chunk} ({increment})", dict(paper, chunk=chunk)) for chunk in settings.chunks
                          if chunk != paper["chunk"]]
        settings_list += [(f"DTS thr {threshold:g} ({increment})", dict(paper, threshold=threshold))
                          for threshold in settings.thresholds if threshold != paper["threshold"]]
        settings_list += [(f"DTS target stride {stride}, thr {threshold:g} ({increment})",
                           dict(paper, target_stride=stride, threshold=threshold))
                          for stride, threshold in settings.target_strides]
    for name, options in settings_list:
        methods.append((name, "dts", options))
    for name, options in settings_list:
        if settings.auto_rows or options is paper or options["target_stride"] != paper["target_stride"]:
            methods.append((name.split(" (")[0] + " auto", "dts", dict(options, auto=True)))
    return methods


def initial_noise(seed, world=DEFAULT_WORLD):
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, world.channels, world.frames, world.height, world.width), generator=generator)


def run_dts_method(model, kind, options, condition, seed, fine_sigmas, world=DEFAULT_WORLD, auto_memory=None):
    """One sample: returns (clip [C, T, H, W], calls, evals, seconds, sample_dts stats or None)."""
    denoiser = FlowDenoiser(model, condition.tokens(world)[None], world.frames_per_block)
    x = initial_noise(seed, world)
    stats = None
    start = _clock()
    if kind == "euler":
        sigmas = options.get("sigmas")
        out = euler_sample(denoiser, x, flow_sigmas(options["steps"], shift=SHIFT) if sigmas is None else sigmas)
    else:
        stats = {}
        out = sample_dts(denoiser, x, fine_sigmas, disable=True, stats=stats, auto_memory=auto_memory, **options)
    seconds = _clock() - start
    return out[0], denoiser.calls, denoiser.evals, seconds, stats


def target_grid(num_steps, options):
    """Fine positions of plain Euler on DTS's target grid (each draft segment cut by target_stride)."""
    a, b = options["draft_stride"], options["target_stride"]
    positions = [0]
    while positions[-1] < num_steps:
        segment_end = min((positions[-1] // a + 1) * a, num_steps)
        positions.append(min(positions[-1] + b, segment_end))
    return positions


def dts_seed(model_name, settings, world, index, sweeps):
    """Every DTS method on one seed: {name: measurements}, and the clips when index == 0 (for the pictures)."""
    model = _model(model_name)
    auto_memory = _AUTO_MEMORY.setdefault(model_name, {})
    fine_sigmas = flow_sigmas(FINE_STEPS, shift=SHIFT)
    seed = settings.seed(index)
    condition, _ = sample_clip(seed, world)
    reference, out, clips = None, {}, {}
    for name, kind, options in dts_methods(settings, sweeps):
        paired_euler = None
        if options.get("auto"):
            # auto's reference: plain Euler on the same target grid, timed next to it (alternating which runs
            # first), so that the machine's load drifts equally over both
            grid_options = dict(steps=None, sigmas=fine_sigmas[target_grid(FINE_STEPS, options)])
            if index % 2 == 0:
                paired_euler = run_dts_method(model, "euler", grid_options, condition, seed, fine_sigmas, world)[3]
            clip, calls, evals, seconds, stats = run_dts_method(model, kind, options, condition, seed, fine_sigmas,
                                                                world, auto_memory)
            if index % 2 == 1:
                paired_euler = run_dts_method(model, "euler", grid_options, condition, seed, fine_sigmas, world)[3]
        else:
            clip, calls, evals, seconds, stats = run_dts_method(model, kind, options, condition, seed, fine_sigmas,
                                                                world)
        if reference is None:
            reference = clip
        difference = (clip - reference).flatten()
        entry = dict(calls=calls, evals=evals, seconds=seconds, l2=float(difference.norm()),
                     rms=float(difference.norm() / math.sqrt(difference.numel())),
                     success=bool(analyse(clip, condition, world).success), paired_euler=paired_euler, auto=None)
        if stats is not None and "auto" in stats:
            entry["auto"] = dict(choice=stats["auto"]["choice"], chunks=stats["auto"]["chunks"],
                                 reason=stats["auto"]["reason"], probes=stats["auto"]["probe_calls"],
                                 cost_ratios=stats["auto"]["cost_ratios"])
        out[name] = entry
        if index == 0:
            clips[name] = clip
    return dict(seed=seed, results=out, clips=clips)


def euler_batch_success(model_name, settings, world, indices, steps):
    """Success of plain Euler-`steps` on the seeds `indices`, batched (one call per step for all of them): the
    convergence check needs only the success, not the wall time, and batching makes it cheap on a CPU. Batched
    matrix products may round differently from one-seed calls, far below what the success check resolves."""
    model = _model(model_name)
    seeds = [settings.seed(i) for i in indices]
    conditions = [sample_clip(seed, world)[0] for seed in seeds]
    context = torch.stack([c.tokens(world) for c in conditions])
    x = torch.cat([initial_noise(seed, world) for seed in seeds])
    clips = euler_sample(FlowDenoiser(model, context, world.frames_per_block), x, flow_sigmas(steps, shift=SHIFT))
    return [bool(analyse(clip, condition, world).success) for clip, condition in zip(clips, conditions)]


def run_dts(model_name, settings, world=DEFAULT_WORLD, log=print, seeds=None, sweeps=True):
    """Per method: mean calls, evals, seconds, distance to Euler-100 (RMS per value and L2), success rate with its
    Wilson interval and the paired McNemar test against Euler-100; for auto rows also what auto chose (share of
    seeds that ran DTS, the chunks) and the wall-time ratio to Euler on the target grid summed over the same seeds.
    Also Euler-`settings.convergence_steps` (success only): is the baseline converged?"""
    methods = dts_methods(settings, sweeps)
    seeds = settings.dts_seeds if seeds is None else seeds
    jobs = [(dts_seed, dict(model_name=model_name, settings=settings, world=world, index=i, sweeps=sweeps))
            for i in range(seeds)]
    batch = 16
    if settings.convergence_steps:
        jobs += [(euler_batch_success, dict(model_name=model_name, settings=settings, world=world,
                                            indices=list(range(i, min(i + batch, seeds))),
                                            steps=settings.convergence_steps)) for i in range(0, seeds, batch)]
    results = map_jobs(jobs, settings.workers, settings.threads)
    per_seed, convergence = results[:seeds], [ok for part in results[seeds:] for ok in part]
    baseline = methods[0][0]
    summary = []
    for name, _, options in methods:
        row = [seed_result["results"][name] for seed_result in per_seed]
        successes = [r["success"] for r in row]
        entry = dict(name=name, options=options, calls=_mean(r["calls"] for r in row),
                     evals=_mean(r["evals"] for r in row), seconds=_mean(r["seconds"] for r in row),
                     rms=_mean(r["rms"] for r in row), l2=_mean(r["l2"] for r in row), success=_mean(successes),
                     successes=sum(successes), seeds=len(successes), interval=wilson(sum(successes), len(successes)),
                     per_seed_success=successes)
        p, only, base_only = mcnemar(successes, [r["success"] for r in
                                                 (s["results"][baseline] for s in per_seed)])
        entry["vs_baseline"] = dict(p=p, only_this=only, only_baseline=base_only)
        autos = [r["auto"] for r in row if r["auto"] is not None]
        if autos:
            euler = [r["paired_euler"] for r in row]
            entry["auto_dts_share"] = _mean(bool(a["chunks"]) for a in autos)  # ran at least one DTS round
            entry["auto_kept_dts_share"] = _mean(a["choice"] == "dts" for a in autos)  # and did not fall back
            entry["auto_chunks"] = sorted({c for a in autos for c in a["chunks"]})
            entry["auto_reasons"] = [a["reason"] for a in autos]
            entry["auto_probes"] = sum(a["probes"] for a in autos)
            ratios = [a["cost_ratios"].get("2") for a in autos if a["cost_ratios"].get("2") is not None]
            entry["auto_cost_ratio_2"] = _mean(ratios) if ratios else None
            entry["paired_euler_seconds"] = _mean(euler)
            entry["vs_target_grid_euler"] = sum(r["seconds"] for r in row) / sum(euler)
            # the median of the per-seed ratios: robust to one seed's timing hiccup
            entry["vs_target_grid_euler_median"] = statistics.median(r["seconds"] / r["paired_euler"] for r in row)
        summary.append(entry)
    base = summary[0]
    converged = None
    if convergence:
        low, high = base["interval"]
        fine = _mean(convergence)
        p, only_fine, only_base = mcnemar(convergence, base["per_seed_success"])
        converged = dict(steps=settings.convergence_steps, successes=sum(convergence), seeds=len(convergence),
                         success=fine, interval=wilson(sum(convergence), len(convergence)),
                         within_baseline_interval=bool(low <= fine <= high), p=p, only_fine=only_fine,
                         only_baseline=only_base)
    seed_range = [settings.seed(0), settings.seed(seeds - 1)]
    log(f"  DTS ({model_name}): {seeds} seeds {seed_range[0]}-{seed_range[1]} done")
    return dict(baseline=baseline, rows=summary, clips=per_seed[0]["clips"], seed=settings.seed_offset,
                seeds=seed_range, convergence=converged)


# ------------------------------------------------------------------------------------------------------------
# SDVG

ORACLE = "SDVG, success check as router"  # the best any router could do with this drafter


def sdvg_methods(settings):
    methods = [("target-only", math.inf), ("draft-only", -math.inf)]
    methods += [(f"SDVG tau {tau:g}", float(tau)) for tau in settings.taus]
    return methods + [(ORACLE, 0.5)]


def make_runner(model, world=DEFAULT_WORLD):
    return PositionalCausalRunner(model, latent_height=world.height, latent_width=world.width,
                                  max_frames=world.frames, frames_per_block=world.frames_per_block)


class RecordingRouter(WorldRouter):
    """The world's router that also records, for every draft it scores, (its score aggregated by min, whether all
    of the draft's frames pass the per-frame success check given the committed frames): the data of the router's
    rank correlation with success."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def score(self, frames, prompt=""):
        scores, analysis = self.judge(frames)
        passes = frame_passes(analysis, self.condition)[-len(scores):]
        self.records.append((float(scores.min()), bool(passes.all())))
        return scores


class OracleRouter(RecordingRouter):
    """Scores a draft 1 when all its frames pass the per-frame success check given the committed frames, else 0:
    the router no real one can beat (the success check is what the benchmark judges), so SDVG with it at tau 0.5
    shows what this drafter allows at best."""

    def score(self, frames, prompt=""):
        super().score(frames, prompt)
        return torch.full((len(frames),), float(self.records[-1][1]))


def spearman(xs, ys):
    """Spearman rank correlation (average ranks for ties); None when either side is constant or n < 3."""
    import numpy as np

    def ranks(values):
        values = np.asarray(values, dtype=np.float64)
        order = values.argsort(kind="mergesort")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(1, len(values) + 1)
        for value in np.unique(values):  # ties share their mean rank
            ranked[values == value] = ranked[values == value].mean()
        return ranked

    if len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def run_sdvg_once(drafter_model, target_model, condition, seed, tau, world=DEFAULT_WORLD, router_records=None,
                  oracle=False):
    """One clip: returns (clip [C, T, H, W], stats, seconds). router_records: a list that receives the router's
    (score, draft passes) records. oracle: route with the success check itself (OracleRouter)."""
    context = condition.tokens(world)[None]
    drafter, target = make_runner(drafter_model, world), make_runner(target_model, world)
    drafter.reset(context)
    target.reset(context)
    decoder = IdentityDecoder()
    router = (OracleRouter if oracle else RecordingRouter)(condition, history=decoder.committed_frames,
                                                           aggregation="min", world=world)
    stats = {}
    start = _clock()
    latent, _ = speculative_generate(
        drafter, target, decoder, router, condition.describe(), num_blocks=world.num_blocks,
        block_shape=(1, world.channels, world.frames_per_block, world.height, world.width), tau=tau,
        drafter_sigmas=DRAFTER_SIGMAS, target_sigmas=TARGET_SIGMAS, seed=seed, stats=stats)
    seconds = _clock() - start
    if router_records is not None:
        router_records.extend(router.records)
    return latent[0], stats, seconds


def sdvg_seed(settings, world, index, correlation_tau):
    """Every SDVG method on one seed: {name: measurements} (wall, acceptance, target forwards, DiT FLOPs from
    speculative_generate's stats, quality, success), the router's records and the clips when index == 0."""
    drafter_model, target_model = _model("drafter"), _model("target")
    seed = settings.seed(index)
    condition, _ = sample_clip(seed, world)
    out, clips, records, clip_score = {}, {}, [], None
    for name, tau in sdvg_methods(settings):
        clip, stats, seconds = run_sdvg_once(
            drafter_model, target_model, condition, seed, tau, world,
            records if tau == correlation_tau and name != ORACLE else None, oracle=name == ORACLE)
        analysis = analyse(clip, condition, world)
        flops = stats.get("flops") or {}
        out[name] = dict(seconds=seconds, drafted=stats["drafted_blocks"], accepted=stats["accepted_blocks"],
                         target_blocks=sum(1 for b in stats["blocks"] if b["source"] == "target"),
                         target_forwards=stats.get("target_forwards"), flops=flops.get("total"),
                         drafter_flops=flops.get("drafter"), target_flops=flops.get("target"),
                         quality=float(analysis.quality.mean()), success=bool(analysis.success))
        if name == "draft-only":  # clip level: the draft-only clip's router score against its success
            clip_score = (float(analysis.quality.min()), bool(analysis.success))
        if index == 0:
            clips[name] = clip
    return dict(seed=seed, results=out, clips=clips, records=records, clip_score=clip_score)


def _mean_or_none(values):
    values = list(values)
    return None if not values or any(v is None for v in values) else _mean(values)


def run_sdvg(settings, world=DEFAULT_WORLD, log=print):
    """Per method: mean wall, acceptance, target blocks and forwards, DiT FLOPs per clip, router score, success
    with its Wilson interval and the paired McNemar test against target-only; the router's rank correlation."""
    methods = sdvg_methods(settings)
    # The router's correlation with success is measured on the drafts of the lowest finite tau (the run that
    # commits the most drafts, so later drafts follow committed drafts as in use).
    correlation_tau = min((tau for name, tau in methods if math.isfinite(tau) and name != ORACLE), default=None)
    jobs = [(sdvg_seed, dict(settings=settings, world=world, index=i, correlation_tau=correlation_tau))
            for i in range(settings.sdvg_seeds)]
    per_seed = map_jobs(jobs, settings.workers, settings.threads)
    base_success = [s["results"]["target-only"]["success"] for s in per_seed]
    summary = []
    for name, tau in methods:
        row = [s["results"][name] for s in per_seed]
        drafted = sum(r["drafted"] for r in row)
        successes = [r["success"] for r in row]
        p, only, base_only = mcnemar(successes, base_success)
        summary.append(dict(
            name=name, tau=tau, seconds=_mean(r["seconds"] for r in row),
            accept=(sum(r["accepted"] for r in row) / drafted) if drafted else None,
            target_blocks=_mean(r["target_blocks"] for r in row),
            target_forwards=_mean_or_none(r["target_forwards"] for r in row),
            flops=_mean_or_none(r["flops"] for r in row), drafter_flops=_mean_or_none(r["drafter_flops"] for r in row),
            target_flops=_mean_or_none(r["target_flops"] for r in row), quality=_mean(r["quality"] for r in row),
            success=_mean(successes), successes=sum(successes), seeds=len(successes),
            interval=wilson(sum(successes), len(successes)), per_seed_success=successes,
            vs_baseline=dict(p=p, only_this=only, only_baseline=base_only)))
    records = [record for s in per_seed for record in s["records"]]
    clip_scores = [s["clip_score"] for s in per_seed if s["clip_score"] is not None]
    router = dict(tau=correlation_tau, drafts=len(records), drafts_passing=sum(ok for _, ok in records),
                  block_spearman=spearman([score for score, _ in records], [ok for _, ok in records]),
                  clips=len(clip_scores), clip_spearman=spearman([c for c, _ in clip_scores],
                                                                 [ok for _, ok in clip_scores]))
    seed_range = [settings.seed(0), settings.seed(settings.sdvg_seeds - 1)]
    log(f"  SDVG: {settings.sdvg_seeds} seeds {seed_range[0]}-{seed_range[1]} done")
    return dict(baseline="target-only", rows=summary, clips=per_seed[0]["clips"], seed=settings.seed_offset,
                seeds=seed_range, router=router)


# ------------------------------------------------------------------------------------------------------------
# Tables

def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _ratio(value, base):
    if value is None or base is None or base == 0 or (isinstance(base, float) and math.isnan(base)):
        return "n/a"
    return f"{value / base:.2f}x"


def _success(row, base):
    """'62% [43, 78] of 32 (1.00x)': the rate, its 95 % Wilson interval, the seeds and the retention."""
    return f"{rate(row['successes'], row['seeds'])} ({_ratio(row['success'], base['success'])})"


def _paired(row, baseline_name):
    """The paired comparison with the baseline on the same seeds: seeds only this row passes / only the baseline
    passes, and the exact McNemar p."""
    if row["name"] == baseline_name:
        return "-"
    test = row["vs_baseline"]
    return f"+{test['only_this']} / -{test['only_baseline']}, p {test['p']:.2g}"


def dts_table(dts):
    """Markdown table of the DTS results; every figure with its ratio to Euler-100 of the same run."""
    base = dts["rows"][0]
    lines = ["| method | calls (sequential) | evals (compute) | wall, CPU ms (speed-up) | distance to Euler-100, RMS "
             "(L2) | success [95% CI] of seeds (retention) | vs Euler-100, same seeds (McNemar) |",
             "|---|---|---|---|---|---|---|"]
    for row in dts["rows"]:
        lines.append(
            f"| {row['name']} | {row['calls']:.1f} ({_ratio(row['calls'], base['calls'])}) "
            f"| {row['evals']:.1f} ({_ratio(row['evals'], base['evals'])}) "
            f"| {1000 * row['seconds']:.0f} ({_ratio(base['seconds'], row['seconds'])}) "
            f"| {row['rms']:.4f} ({row['l2']:.2f}) | {_success(row, base)} | {_paired(row, base['name'])} |")
    return "\n".join(lines)


def convergence_line(dts):
    """Is the baseline converged? Euler-200 on the same seeds against Euler-100's interval."""
    check = dts.get("convergence")
    if not check:
        return ""
    base = dts["rows"][0]
    verdict = ("within Euler-100's interval: Euler-100 counts as converged here" if check["within_baseline_interval"]
               else "outside Euler-100's interval: Euler-100 is NOT converged here, so a method can beat it by "
                    "sampling better, not only match it")
    return (f"Converged? Euler-{check['steps']} (batched over the seeds, success only): "
            f"{rate(check['successes'], check['seeds'])} against Euler-100's {rate(base['successes'], base['seeds'])}"
            f", paired +{check['only_fine']} / -{check['only_baseline']} seeds, McNemar p {check['p']:.2g}: "
            f"{verdict}.")


def auto_table(dts):
    """Markdown table of the auto rows: what auto chose and its wall time against plain Euler on the target grid."""
    rows = [row for row in dts["rows"] if "vs_target_grid_euler" in row]
    if not rows:
        return ""
    lines = ["| setting | seeds with DTS rounds (kept to the end) | chunks run | 2 positions cost (x one call) "
             "| probe calls, all seeds | wall, CPU ms | wall vs plain Euler on the same grid, timed alongside (its ms) "
             "| median over seeds of that ratio | calls | success |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = row["auto_cost_ratio_2"]
        lines.append(
            f"| {row['name']} | {100 * row['auto_dts_share']:.0f}% ({100 * row['auto_kept_dts_share']:.0f}%) "
            f"| {', '.join(str(c) for c in row['auto_chunks']) or '-'} "
            f"| {'not measured' if ratio is None else f'{ratio:.2f}'} | {row['auto_probes']} "
            f"| {1000 * row['seconds']:.0f} "
            f"| {row['vs_target_grid_euler']:.3f}x ({1000 * row['paired_euler_seconds']:.0f}) "
            f"| {row['vs_target_grid_euler_median']:.3f}x "
            f"| {row['calls']:.1f} | {100 * row['success']:.0f}% |")
    return "\n".join(lines)


def router_line(sdvg):
    router = sdvg.get("router") or {}

    def fmt(value):
        return "n/a (constant)" if value is None else f"{value:+.2f}"

    return (f"Router vs success (Spearman rank correlation): per drafted block, score (min over its frames) vs "
            f"the block's frames passing the success check given the committed frames: "
            f"{fmt(router.get('block_spearman'))} over {router.get('drafts', 0)} drafts at tau {router.get('tau')} "
            f"({router.get('drafts_passing', 0)} passing); per draft-only clip, min frame score vs clip success: "
            f"{fmt(router.get('clip_spearman'))} over {router.get('clips', 0)} clips.")


TRANSFERS = ("What transfers to a GPU: `calls` (sequential model calls: the latency on hardware that runs a batch in "
             "the time of one sample), `evals` (per-sample evaluations: the compute), SDVG's DiT FLOPs and target "
             "forwards do (counted from the models' shapes and the tokens of each call, docs/sdvg.md \"Costs\"); "
             "CPU `wall` times and CPU speed-ups do not (at these tiny sizes fixed per-call overheads weigh as much "
             "as the arithmetic); auto's choice is made per machine from its own measurements, so its CPU choice "
             "does not transfer either; success rates and distances are properties of the models and transfer.")


def sdvg_table(sdvg):
    """Markdown table of the SDVG results; ratios to target-only of the same run."""
    base = sdvg["rows"][0]
    lines = ["| method | success [95% CI] of seeds (retention) | vs target-only, same seeds (McNemar) "
             "| DiT FLOPs per clip, M (speed-up) | wall, CPU ms (speed-up) | accept | target forwards "
             "| router score |",
             "|---|---|---|---|---|---|---|---|"]
    for row in sdvg["rows"]:
        accept = "n/a" if row["accept"] is None else f"{100 * row['accept']:.0f}%"
        flops = ("n/a" if row["flops"] is None else
                 f"{row['flops'] / 1e6:.0f} ({_ratio(base['flops'], row['flops'])})")
        forwards = "n/a" if row["target_forwards"] is None else f"{row['target_forwards']:.1f}"
        lines.append(
            f"| {row['name']} | {_success(row, base)} | {_paired(row, base['name'])} | {flops} "
            f"| {1000 * row['seconds']:.0f} ({_ratio(base['seconds'], row['seconds'])}) "
            f"| {accept} | {forwards} | {row['quality']:.3f} |")
    return "\n".join(lines)


def machine_description(threads):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {threads} thread(s), "
            f"Python {platform.python_version()}")


# ------------------------------------------------------------------------------------------------------------
# Pictures

def plot_frontiers(dts_worlds, sdvg, path):
    """PNG with the quality-speed frontiers, one panel per DTS world ({title: run_dts result}) and SDVG's
    (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(dts_worlds) + 1, figsize=(6 * (len(dts_worlds) + 1), 4.8))
    # Distance to Euler-100's clip (same noise) as the quality axis: it separates the methods even where the
    # success rates tie; the success rates are in the table.
    for left, (title, dts) in zip(axes, dts_worlds.items()):
        base = dts["rows"][0]
        for index, row in enumerate(dts["rows"]):
            if row["name"].endswith(" auto"):
                continue  # on a CPU an auto row lies on plain Euler's point; the auto table has them
            calls_speedup = base["calls"] / row["calls"]
            marker = "s" if row["name"].startswith("Euler") else "o"
            left.scatter(calls_speedup, row["rms"], marker=marker,
                         color="tab:gray" if marker == "s" else "tab:blue")
            label = row["name"].replace("DTS ", "").split(" (")[0] + f" ({100 * row['success']:.0f}%)"
            left.annotate(label, (calls_speedup, row["rms"]), fontsize=7, xytext=(3, 3 if index % 2 else -9),
                          textcoords="offset points")  # alternating above / below: near points stay legible
        left.set_xscale("log")
        left.set_xlabel("speed-up in sequential model calls vs Euler-100 (latency on parallel hardware)")
        left.set_ylabel("RMS distance to Euler-100's clip (lower is better)")
        left.set_title(f"DTS vs Euler, {title} (success rate in brackets)")
        left.grid(alpha=0.3)

    right = axes[-1]
    base = sdvg["rows"][0]
    xs, ys = [], []
    for index, row in enumerate(sdvg["rows"]):
        speedup = (base["flops"] / row["flops"] if base["flops"] and row["flops"]
                   else base["seconds"] / row["seconds"])
        retention = row["success"] / base["success"] if base["success"] else float("nan")
        tau_row = row["name"].startswith("SDVG tau")
        colour = "tab:orange" if tau_row else ("tab:green" if row["name"] == ORACLE else "tab:gray")
        right.scatter(speedup, 100 * retention, color=colour)
        label = "oracle router" if row["name"] == ORACLE else row["name"].replace("SDVG ", "")
        right.annotate(label, (speedup, 100 * retention), fontsize=7, xytext=(3, 3 if index % 2 else -9),
                       textcoords="offset points")
        if tau_row:
            xs.append(speedup)
            ys.append(100 * retention)
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    right.plot([xs[i] for i in order], [ys[i] for i in order], color="tab:orange", alpha=0.5)
    right.set_xlabel("speed-up in DiT FLOPs vs target-only")
    right.set_ylabel("success retention vs target-only (%)")
    right.set_title("SDVG: drafter + router + target")
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _labelled_row(frames, label, scale):
    """frames [T, H, W, 3] 0..1 -> PIL image: the label, then the frames side by side, upscaled."""
    from PIL import Image, ImageDraw

    frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    count, height, width = frames.shape[:3]
    label_width = 150
    image = Image.new("RGB", (label_width + count * (width * scale + 2), height * scale + 4), (40, 40, 40))
    ImageDraw.Draw(image).text((4, height * scale // 2 - 6), label, fill=(230, 230, 230))
    for t in range(count):
        tile = Image.fromarray(frames[t]).resize((width * scale, height * scale), Image.NEAREST)
        image.paste(tile, (label_width + t * (width * scale + 2), 2))
    return image


def write_strip(rows, path, scale=6):
    """rows: [(label, clip [C, T, H, W])] -> one PNG, a row per method."""
    from PIL import Image

    images = [_labelled_row(latent_to_frames(clip), label, scale) for label, clip in rows]
    strip = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), (40, 40, 40))
    top = 0
    for image in images:
        strip.paste(image, (0, top))
        top += image.height
    strip.save(path)


def write_gif(rows, path, scale=8):
    """rows: [(label, clip)] -> an animated GIF, the methods side by side, one frame per video frame."""
    from PIL import Image, ImageDraw

    clips = [(label, (latent_to_frames(clip).clamp(0, 1) * 255).round().to(torch.uint8).numpy())
             for label, clip in rows]
    count, height, width = clips[0][1].shape[:3]
    cell = width * scale
    pictures = []
    for t in range(count):
        image = Image.new("RGB", (len(clips) * (cell + 4), height * scale + 18), (40, 40, 40))
        draw = ImageDraw.Draw(image)
        for i, (label, frames) in enumerate(clips):
            tile = Image.fromarray(frames[t]).resize((cell, height * scale), Image.NEAREST)
            image.paste(tile, (i * (cell + 4), 16))
            draw.text((i * (cell + 4) + 2, 2), label[:22], fill=(230, 230, 230))
        pictures.append(image)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=250, loop=0)


# ------------------------------------------------------------------------------------------------------------

def run_dts_worlds(settings, log=print):
    """The DTS part: {key: run_dts result} for each world of DTS_WORLDS."""
    results = {}
    for key, title, model_name, world, seeds_field, sweeps_field in DTS_WORLDS:
        seeds = getattr(settings, seeds_field)
        sweeps = True if sweeps_field is None else getattr(settings, sweeps_field)
        log(f"DTS in the {title} (model {model_name}): {seeds} seed(s), "
            f"{len(dts_methods(settings, sweeps))} methods")
        results[key] = run_dts(model_name, settings, world, log, seeds=seeds, sweeps=sweeps)
    return results


def _seed_note(result):
    first, last = result["seeds"]
    return f"{last - first + 1} seeds {first}-{last}"


def dts_goal_line(result, key):
    """Issue 19's goal for DTS at its default, measured: in the beacon world within 2 points of Euler-100's
    success at >= 3x fewer sequential calls; in the star world no worse than Euler on the target grid (Euler-50)."""
    rows = {row["name"]: row for row in result["rows"]}
    dts, base = rows.get(DTS_DEFAULT_NAME), rows[result["baseline"]]
    if dts is None:
        return ""
    fewer = base["calls"] / dts["calls"]
    points = 100 * (dts["success"] - base["success"])
    if key == "beacon":
        reached = points >= -2 and fewer >= 3
        return (f"Goal (DTS default within 2 points of Euler-100 at >= 3x fewer sequential calls): "
                f"{'reached' if reached else 'NOT reached'}: {points:+.1f} points at {fewer:.2f}x fewer calls.")
    if key == "stars" and "Euler-50" in rows:
        grid = rows["Euler-50"]
        reached = dts["successes"] >= grid["successes"]
        return (f"Goal (DTS default no worse than Euler on its target grid, Euler-50): "
                f"{'reached' if reached else 'NOT reached'}: {rate(dts['successes'], dts['seeds'])} against "
                f"{rate(grid['successes'], grid['seeds'])}, at {fewer:.2f}x fewer calls than Euler-100.")
    return ""


def dts_tables(dts_worlds):
    """The DTS part of tables.md: per world its table, the convergence check, the goal and the auto table."""
    defaults = inspect.signature(sample_dts).parameters
    threshold, increment = defaults["threshold"].default, defaults["increment"].default
    common = (f"`{DTS_DEFAULT_NAME}` runs sample_dts's (and the nodes') defaults: draft stride 10, target stride "
              "2, chunk 6, a draft state accepted while its distance to the target's is at most rtol times the "
              f"target's own update over the segment (rtol {DEFAULT_RTOL:g}, atol {DEFAULT_ATOL:g}, growing by "
              f"({threshold:g} + {increment:g} r) / {threshold:g} in round r as the paper's threshold does). Every "
              "other DTS row runs the paper's "
              "distance rule: draft stride 10, target stride 2, chunk 6, rms threshold 0.0375 and increment 0.005 "
              "(the paper's L2 11 and 1.5 in size-independent units) unless its name says otherwise.")
    parts = [common]
    for key, title, model_name, _, _, _ in DTS_WORLDS:
        result = dts_worlds[key]
        auto = auto_table(result)
        parts += [f"## DTS, {title} ({model_name}, {_seed_note(result)}, 100-step fine schedule, shift {SHIFT:g})",
                  dts_table(result), convergence_line(result), dts_goal_line(result, key),
                  auto and f"### DTS auto ({title}): what it chose, and its wall time against plain Euler on the "
                           f"same grid\n\n{auto}"]
    return "\n\n".join(part for part in parts if part) + "\n\n"


def _json_dts(result, world_name):
    return dict(world=world_name, baseline=result["baseline"], seeds=result["seeds"],
                convergence=result["convergence"], rows=result["rows"])


def run(settings=None, out_dir=RESULTS_DIR, log=print, pictures=True, target=None, drafter=None, target_stars=None,
        target_beacon=None, world=DEFAULT_WORLD):
    """Run the benchmark; writes tables, JSON and pictures under out_dir and returns the results dict.

    Models given as objects (the tests' tiny run) are used in this process (one worker); otherwise each worker
    process loads the shipped ones by name."""
    settings = Settings.quick() if settings is None else settings
    torch.set_num_threads(settings.threads)
    given = dict(target=target, drafter=drafter, target_stars=target_stars, target_beacon=target_beacon)
    if any(model is not None for model in given.values()):
        settings.workers = 1
    _MODELS.update({name: model for name, model in given.items() if model is not None})
    _AUTO_MEMORY.clear()
    os.makedirs(out_dir, exist_ok=True)
    started = _clock()
    log(f"Seeds: {settings.seeds} range {settings.seed_range.start}-{settings.seed_range.stop - 1}; "
        f"{settings.workers} worker process(es) with {settings.threads} thread(s) each")
    dts_worlds = run_dts_worlds(settings, log) if settings.dts else None
    sdvg = None
    if settings.sdvg:
        log(f"SDVG: {settings.sdvg_seeds} seed(s), {len(sdvg_methods(settings))} methods")
        sdvg = run_sdvg(settings, world, log)
    seconds = _clock() - started
    machine = machine_description(settings.threads)
    tables = dts_tables(dts_worlds) if dts_worlds else ""
    if sdvg:
        tables += (f"## SDVG (drafter {len(DRAFTER_SIGMAS)} steps, target {len(TARGET_SIGMAS)} steps, "
                   f"{_seed_note(sdvg)}, {world.num_blocks} blocks of {world.frames_per_block} frames; router: the "
                   f"world's quality score, min over a block's frames)\n\n"
                   f"{sdvg_table(sdvg)}\n\n{router_line(sdvg)}\n\n")
    tables += (f"{TRANSFERS}\n\nMachine: {machine}; {settings.workers} worker process(es). Run `{settings.label}` "
               f"on the {settings.seeds} seeds took {seconds:.0f} s.\n")
    paths = {"tables": os.path.join(out_dir, "tables.md"), "json": os.path.join(out_dir, "results.json")}
    with open(paths["tables"], "w") as handle:
        handle.write(tables)
    serialisable = dict(settings=dict(settings.__dict__, seed_range=[settings.seed_range.start,
                                                                     settings.seed_range.stop - 1]),
                        machine=machine, seconds=seconds, target_sigmas=list(TARGET_SIGMAS),
                        drafter_sigmas=list(DRAFTER_SIGMAS))
    if dts_worlds:
        serialisable["dts"] = _json_dts(dts_worlds["stars"], "stars")
        serialisable["dts_beacon_world"] = _json_dts(dts_worlds["beacon"], "beacon")
        serialisable["dts_default_world"] = _json_dts(dts_worlds["default"], "default")
    if sdvg:
        serialisable["sdvg"] = dict(baseline=sdvg["baseline"], router=sdvg["router"], seeds=sdvg["seeds"],
                                    rows=[dict(r, tau=str(r["tau"])) for r in sdvg["rows"]])
    with open(paths["json"], "w") as handle:
        json.dump(serialisable, handle, indent=1, default=str)
    if pictures and dts_worlds and sdvg:
        paths.update(write_pictures(dts_worlds, sdvg, out_dir, log))
    log("")
    log(tables)
    log("wrote " + ", ".join(paths.values()) + (" (git-ignored)" if os.path.abspath(out_dir) == RESULTS_DIR else ""))
    return dict(dts=dts_worlds and dts_worlds["stars"], dts_beacon_world=dts_worlds and dts_worlds["beacon"],
                dts_default_world=dts_worlds and dts_worlds["default"],
                sdvg=sdvg, tables=tables, paths=paths, seconds=seconds, machine=machine)


def write_pictures(dts_worlds, sdvg, out_dir, log=print):
    """frontiers.png (with matplotlib), strip.png and clips.gif (the beacon world's DTS clips, then SDVG's) under
    out_dir; returns their paths."""
    paths = {}
    try:
        import matplotlib  # noqa: F401  (the pack's test extra)
    except ImportError:
        log("matplotlib is not installed: no frontiers.png (pip install matplotlib)")
    else:
        paths["plot"] = os.path.join(out_dir, "frontiers.png")
        titles = {key: title for key, title, *_ in DTS_WORLDS}
        plot_frontiers({titles[key]: result for key, result in dts_worlds.items() if key != "default"}, sdvg,
                       paths["plot"])
    dts = dts_worlds["beacon"]
    strip_rows = [(name, dts["clips"][name]) for name in ("Euler-100", "Euler-10") if name in dts["clips"]]
    strip_rows.append(("DTS default", dts["clips"][DTS_DEFAULT_NAME]))
    sdvg_names = [r["name"] for r in sdvg["rows"] if r["name"] != ORACLE]
    middle = sdvg_names[2 + len(sdvg_names[2:]) // 2]
    strip_rows += [(name, sdvg["clips"][name]) for name in ("target-only", "draft-only", middle)]
    paths["strip"] = os.path.join(out_dir, "strip.png")
    write_strip(strip_rows, paths["strip"])
    paths["gif"] = os.path.join(out_dir, "clips.gif")
    write_gif(strip_rows, paths["gif"])
    return paths
