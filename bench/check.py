"""Analytic success check and per-frame quality score for clips of the toy world.

Analysis of frames `[T, H, W, 3]` (0..1) against a Condition:
1. every pixel is classified as background, one of the six colours, or "unclean" (far from all of them);
2. each conditioned object is tracked by its colour: area and centroid per frame;
3. each frame's position error in pixels is the distance of the centroid from the conditioned track (start
   position + velocity with wall bounces); for an object without a start (a bare condition) the best start is
   fitted per axis (minimax over frames).

A clip SUCCEEDS (the analogue of the DTS paper's task success) when, in every frame, every conditioned object
is present (>= MIN_AREA pixels of its colour, no more than its sprite area + EXTRA_AREA), its mean area matches
its kind (square 9 px, plus 5 px), its track follows the conditioned start and motion within POSITION_TOLERANCE
pixels, and no frame has MIN_AREA or more pixels of a colour that was not asked for; in the star world also no
frame has SMEAR_LIMIT or more smeared stars (background pixels near neither black nor a star), in the beacon world
no frame has a smeared beacon (a beacon pixel near neither black nor lit; under a conditioned sprite's box it is
not judged).

The per-frame QUALITY in [0, 1] (1 = perfect) is the SDVG router's score in this world: it penalises missing
area, position error, stray colours and unclean pixels; see `frame_quality`.
"""
import functools
from dataclasses import dataclass

import numpy as np
import torch

from .world import (BACKGROUND, COLOUR_NAMES, COLOURS, DEFAULT_WORLD, SPRITE_AREA, SPRITE_SIZE, STAR_LEVEL,
                    bounce_track, latent_to_frames, object_track)

CLEAN_DISTANCE = 0.5  # RGB distance (0..1 units) within which a pixel counts as its nearest palette colour
MIN_AREA = 3  # pixels of an object's colour for it to count as present
EXTRA_AREA = 4  # pixels beyond the sprite's area tolerated (a smeared edge), more means a duplicate/smear
POSITION_TOLERANCE = 1.0  # pixels, worst frame, for success
STRAY_LIMIT = MIN_AREA  # pixels of an unrequested colour that make a frame fail
# Star world: a background pixel further than this from both black and a star is a smeared star (half way
# between them is 0.43 from each); SMEAR_LIMIT of them outside the conditioned sprites' boxes fail a frame.
STAR_CLEAN_DISTANCE = 0.25
SMEAR_LIMIT = MIN_AREA
# Beacon world: one smeared beacon fails its frame (the world's one late-settled choice per frame, so no slack).
# Fixed, with the beacon world, before any model was trained on it (docs/bench.md, "The beacon world").
BEACON_SMEAR_LIMIT = 1
KIND_SPLIT = (SPRITE_AREA["square"] + SPRITE_AREA["plus"]) / 2.0

_PALETTE = np.array([BACKGROUND] + [COLOURS[name] for name in COLOUR_NAMES] + [STAR_LEVEL], dtype=np.float32)
STAR_LABEL = len(_PALETTE) - 1


@dataclass
class ClipAnalysis:
    area: np.ndarray  # [T, N] pixels of each conditioned object's colour
    centre: np.ndarray  # [T, N, 2] centroid (x, y), NaN where absent
    position_error: np.ndarray  # [T, N] pixels from the conditioned (or fitted) trajectory (inf where absent)
    stray: np.ndarray  # [T] pixels of unrequested colours
    unclean: np.ndarray  # [T] pixels near no palette colour
    smeared: np.ndarray  # [T] star / beacon world: background (beacon) pixels outside the sprites' boxes near neither
    # black nor a star
    smear_limit: int  # smeared pixels that fail a frame (`smear_limit(world)`)
    present: np.ndarray  # [T, N] bool
    kind_ok: np.ndarray  # [N] bool
    quality: np.ndarray  # [T] per-frame quality in [0, 1]
    success: bool
    reasons: list  # why it failed (empty on success)


def smear_limit(world):
    """Smeared pixels that fail a frame: SMEAR_LIMIT of the stars, BEACON_SMEAR_LIMIT of the beacons."""
    return BEACON_SMEAR_LIMIT if world.beacons else SMEAR_LIMIT


def _lit(world):
    """Does the world show grey pixels (stars or beacons) that are not colours?"""
    return bool(world.stars or world.beacons)


def classify(frames, world=DEFAULT_WORLD):
    """frames [T, H, W, 3] in 0..1 -> (labels [T, H, W] int: 0 background, 1..6 colours, STAR_LABEL a star or lit
    beacon (star and beacon worlds only), -1 unclean; distance [T, H, W] to the nearest of black and a star)."""
    frames = torch.as_tensor(frames, dtype=torch.float32).numpy()
    palette = _PALETTE if _lit(world) else _PALETTE[:STAR_LABEL]
    # numpy broadcasting: tiny arrays, and no torch thread pool to wait for on a busy machine
    squared = ((frames[..., None, :] - palette[None, :, :]) ** 2).sum(axis=-1)
    label = squared.argmin(axis=-1)
    nearest = np.take_along_axis(squared, label[..., None], axis=-1)[..., 0]
    dark = squared[..., [0, STAR_LABEL]].min(axis=-1) if _lit(world) else squared[..., 0]
    return np.where(nearest <= CLEAN_DISTANCE ** 2, label, -1), np.sqrt(dark)


@functools.lru_cache(maxsize=256)
def _centre_tracks(velocity, frames, limit):
    """Centre coordinate of every start position for one axis: float array [limit + 1, frames]."""
    return np.stack([bounce_track(s, velocity, frames, limit) for s in range(limit + 1)]).astype(np.float64) \
        + (SPRITE_SIZE - 1) / 2.0


def fit_axis(coordinates, velocity, limit):
    """Minimax fit of one axis: coordinates [T] (NaN = unknown) -> per-frame absolute error [T] (NaN kept)."""
    tracks = _centre_tracks(int(velocity), len(coordinates), int(limit))
    known = ~np.isnan(coordinates)
    if not known.any():
        return np.full(len(coordinates), np.nan)
    error = np.abs(tracks - coordinates[None, :])
    worst = np.where(known[None, :], error, 0.0).max(axis=1)
    mean = np.where(known[None, :], error, 0.0).sum(axis=1)
    best = np.lexsort((mean, worst))[0]
    out = error[best].copy()
    out[~known] = np.nan
    return out


def analyse(frames, condition, world=DEFAULT_WORLD):
    """Analyse frames [T, H, W, 3] (0..1) or a latent clip [C, T, H, W] (-1..1) against `condition`."""
    frames = torch.as_tensor(frames)
    if frames.dim() == 4 and frames.shape[0] == 3 and frames.shape[-1] != 3:
        frames = latent_to_frames(frames)
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"analyse: frames must be [T, H, W, 3] or a latent [3, T, H, W] (got {tuple(frames.shape)})")
    labels, dark_distance = classify(frames, world)
    num_frames, height, width = labels.shape
    objects = condition.objects
    n = len(objects)
    area = np.zeros((num_frames, n))
    centre = np.full((num_frames, n, 2), np.nan)
    ys, xs = np.mgrid[0:height, 0:width]
    for j, obj in enumerate(objects):
        mask = labels == 1 + COLOUR_NAMES.index(obj.colour)
        area[:, j] = mask.sum(axis=(1, 2))
        for t in range(num_frames):
            if area[t, j] > 0:
                centre[t, j] = (xs[mask[t]].mean(), ys[mask[t]].mean())
    present = area >= MIN_AREA
    expected = np.array([SPRITE_AREA[o.kind] for o in objects], dtype=np.float64)
    position_error = np.full((num_frames, n), np.inf)
    for j, obj in enumerate(objects):
        x = np.where(present[:, j], centre[:, j, 0], np.nan)
        y = np.where(present[:, j], centre[:, j, 1], np.nan)
        if obj.start is None:  # a bare condition: the best start for the conditioned motion
            ex = fit_axis(x, obj.velocity[0], width - SPRITE_SIZE)
            ey = fit_axis(y, obj.velocity[1], height - SPRITE_SIZE)
        else:  # the conditioned start and motion: the ground-truth track's centres
            centre_offset = (SPRITE_SIZE - 1) / 2.0  # the first num_frames frames (the router judges prefixes)
            track_y = bounce_track(obj.start[1], obj.velocity[1], num_frames, height - SPRITE_SIZE) + centre_offset
            track_x = bounce_track(obj.start[0], obj.velocity[0], num_frames, width - SPRITE_SIZE) + centre_offset
            ey = np.abs(y - track_y)
            ex = np.abs(x - track_x)
        error = np.sqrt(ex ** 2 + ey ** 2)
        position_error[:, j] = np.where(np.isnan(error), np.inf, error)
    wanted = {0} | {1 + COLOUR_NAMES.index(o.colour) for o in objects}
    stray = np.zeros(num_frames)
    for label in range(1, len(COLOUR_NAMES) + 1):
        if label not in wanted:
            stray += (labels == label).sum(axis=(1, 2))
    unclean = (labels == -1).sum(axis=(1, 2)).astype(np.float64)
    smeared = np.zeros(num_frames)
    if _lit(world):
        if world.stars:
            outside = np.ones((num_frames, height, width), dtype=bool)
        else:  # only the beacons are judged
            outside = np.zeros((num_frames, height, width), dtype=bool)
            for x, y in world.beacons:
                outside[:, y, x] = True
        for obj in objects:
            if obj.start is not None:
                for t, (x, y) in enumerate(object_track(obj, world)[:num_frames]):
                    outside[t, y:y + SPRITE_SIZE, x:x + SPRITE_SIZE] = False
        smeared = ((dark_distance > STAR_CLEAN_DISTANCE) & ~((labels >= 1) & (labels < STAR_LABEL))
                   & outside).sum(axis=(1, 2)).astype(np.float64)
    mean_area = area.mean(axis=0) if num_frames else np.zeros(n)
    kind_ok = np.array([(mean_area[j] >= KIND_SPLIT) == (o.kind == "square") for j, o in enumerate(objects)],
                       dtype=bool)
    quality = frame_quality(area, position_error, stray, unclean, expected)

    reasons = []
    if n and not present.all():
        reasons.append(f"object missing in {int((~present).any(axis=1).sum())} frame(s)")
    if n and (area > expected[None, :] + EXTRA_AREA).any():
        reasons.append("an object is smeared or duplicated")
    if n and not kind_ok.all():
        reasons.append("wrong shape kind")
    if n and present.all() and (position_error > POSITION_TOLERANCE).any():
        reasons.append(f"motion off by {position_error.max():.2f} px")
    if (stray >= STRAY_LIMIT).any():
        reasons.append("unrequested colour present")
    limit = smear_limit(world)
    if (smeared >= limit).any():
        what = "beacon" if world.beacons else "stars"
        reasons.append(f"{what} smeared ({int(smeared.max())} pixels in a frame)")
    return ClipAnalysis(area=area, centre=centre, position_error=position_error, stray=stray, unclean=unclean,
                        smeared=smeared, smear_limit=limit,
                        present=present, kind_ok=kind_ok, quality=quality, success=not reasons, reasons=reasons)


def frame_passes(analysis, condition):
    """Per-frame success [T] bool: every conditioned object present and not smeared, within POSITION_TOLERANCE of
    its track, no unrequested colour (the per-frame part of the success check; the kind is judged per clip)."""
    expected = np.array([SPRITE_AREA[o.kind] for o in condition.objects], dtype=np.float64)
    ok = (analysis.stray < STRAY_LIMIT) & (analysis.smeared < analysis.smear_limit)
    if len(expected):
        ok = ok & analysis.present.all(axis=1) & (analysis.area <= expected[None, :] + EXTRA_AREA).all(axis=1) \
            & (analysis.position_error <= POSITION_TOLERANCE).all(axis=1)
    return ok


def frame_quality(area, position_error, stray, unclean, expected):
    """Per-frame quality in [0, 1]: 1 - weighted penalties, each in [0, 1].

    missing  (weight 0.4): mean over objects of 1 - min(1, area / sprite area)
    motion   (weight 0.4): mean over objects of min(1, position error / 2 px) (1 when absent)
    stray    (weight 0.1): unrequested-colour pixels / total sprite area, capped at 1
    unclean  (weight 0.1): pixels near no palette colour / total sprite area, capped at 1
    """
    num_frames = area.shape[0]
    if area.shape[1] == 0:
        missing = np.zeros(num_frames)
        motion = np.zeros(num_frames)
        total = float(SPRITE_AREA["square"])
    else:
        missing = (1.0 - np.minimum(1.0, area / expected[None, :])).mean(axis=1)
        motion = np.minimum(1.0, position_error / 2.0).mean(axis=1)
        total = float(expected.sum())
    penalty = (0.4 * missing + 0.4 * motion + 0.1 * np.minimum(1.0, stray / total)
               + 0.1 * np.minimum(1.0, unclean / total))
    return np.clip(1.0 - penalty, 0.0, 1.0)


def is_success(clip, condition, world=DEFAULT_WORLD):
    """True when the clip (latent [C, T, H, W] or frames [T, H, W, 3]) shows the conditioned objects and motion."""
    return analyse(clip, condition, world).success


class WorldRouter:
    """SDVG router for the toy world: per-frame quality of new frames, judged together with the committed ones.

    score(frames [n, H, W, 3] 0..1, prompt) -> tensor [n]. The prompt is ignored: the condition is bound here.
    `history` is a no-argument callable returning the committed frames [m, H, W, 3] (or None): the motion fit
    covers committed ++ new frames, so a draft that breaks the established motion scores low.
    """

    def __init__(self, condition, history=None, aggregation="min", world=DEFAULT_WORLD):
        self.condition = condition
        self.history = history
        self.aggregation = aggregation
        self.world = world

    def score(self, frames, prompt=""):
        return self.judge(frames)[0]

    def judge(self, frames):
        """(quality [n] tensor, the analysis of committed ++ new frames) of new frames [n, H, W, 3]."""
        frames = torch.as_tensor(frames, dtype=torch.float32)
        committed = self.history() if self.history is not None else None
        if committed is not None and len(committed):
            frames_all = torch.cat([torch.as_tensor(committed, dtype=torch.float32), frames])
        else:
            frames_all = frames
        analysis = analyse(frames_all, self.condition, self.world)
        return torch.as_tensor(analysis.quality[-frames.shape[0]:], dtype=torch.float32), analysis


class IdentityDecoder:
    """The world's 'VAE': latent block [B=1, 3, F, H, W] -> frames [F, H, W, 3] in 0..1; keeps committed frames."""

    def __init__(self):
        self.committed = []

    def reset(self):
        self.committed = []

    def decode(self, latent_block):
        frames = latent_to_frames(latent_block[0])
        return frames, frames

    def advance(self, pending_state):
        self.committed.append(pending_state)

    def committed_frames(self):
        return torch.cat(self.committed) if self.committed else None
