"""Validation scores (overall and per modality) and the tuning of the watershed values.

Validation scores each held-out image with the DSB2018 metric (:mod:`nucleiseg.metrics`) and
averages over images, overall and per modality. Tuning grid-searches the watershed's marker and
mask thresholds and minimum size on the validation probabilities; the minimum-size candidates
are quantiles of the *training* nuclei's areas, so the chosen size is learned from the data.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, NamedTuple

import numpy as np

from ..labels import nucleus_areas
from ..metrics import dsb_score
from ..model.config import ModelConfig, ValidationRecord
from ..postprocess import WatershedParams, drop_small_objects, probabilities_to_labels
from . import ddp
from .samples import Sample

#: The tuning grid: marker and mask thresholds (probabilities) and minimum-size quantiles.
MARKER_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MASK_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREA_QUANTILES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1)


class ValidationScore(NamedTuple):
    """Validation DSB2018 score, and the same per image modality and per collection.

    ``score`` is the mean over images when they come from one collection; with several, it is
    the mean of the collections' means, so a small collection counts as much as a large one.
    """

    score: float
    per_modality: dict[str, float]
    per_collection: dict[str, float]


def summarize(scores: Iterable[tuple[str, str, float]]) -> ValidationScore:
    """The :class:`ValidationScore` of (collection, modality, image score) triples."""
    scores = list(scores)

    def means(key: int) -> dict[str, float]:
        groups: dict[str, list[float]] = {}
        for triple in scores:
            groups.setdefault(triple[key], []).append(triple[2])
        return {k: float(np.mean(v)) for k, v in sorted(groups.items())}

    per_collection = means(0)
    overall = (float(np.mean([v for *_, v in scores])) if len(per_collection) == 1
               else float(np.mean(list(per_collection.values()))))
    return ValidationScore(overall, means(1), per_collection)


def image_scores(probabilities: Iterable[np.ndarray], samples: list[Sample], params: WatershedParams
                 ) -> list[tuple[str, str, float]]:
    """(collection, modality, DSB score) of each sample's watershed labels of its probabilities
    ((3, H, W) each, in the samples' order)."""
    return [(s.collection, s.modality, dsb_score(s.labels, probabilities_to_labels(p, params)))
            for p, s in zip(probabilities, samples)]


def score_probabilities(probabilities: Iterable[np.ndarray], samples: list[Sample], params: WatershedParams
                        ) -> ValidationScore:
    """Mean DSB score of the watershed labels of ``probabilities`` against the samples' labels."""
    return summarize(image_scores(probabilities, samples, params))


def validate(predictor, samples: list[Sample], params: WatershedParams,
             ctx: ddp.DistContext = ddp.SINGLE_PROCESS) -> ValidationScore:
    """Score ``predictor`` (a :class:`~nucleiseg.inference.predictor.Predictor`) on ``samples``,
    one image at a time. Under torchrun, rank 0's parameters and buffers of the scored network
    are first copied to every rank (BatchNorm statistics, and those of a weight average, differ
    per rank), then each rank scores its share of the images and the scores are gathered, so
    every rank returns the score of rank 0's network on all of them."""
    ddp.broadcast_state(predictor.model, ctx)
    shard = samples[ctx.rank :: ctx.world_size]
    probabilities = (predictor.probabilities_of_normalized(s.image) for s in shard)
    return summarize(ddp.gather(image_scores(probabilities, shard, params), ctx))


def min_area_candidates(samples: list[Sample], quantiles: Iterable[float] = MIN_AREA_QUANTILES) -> dict[float, int]:
    """Minimum-size candidates learned from the training nuclei: {quantile: area in pixels}.

    The q-quantile of the areas (pixels) of every nucleus in ``samples``; quantile 0 gives 0 (keep
    everything). The watershed tuning picks one of these on the validation split.
    """
    areas = nucleus_areas(*(s.labels for s in samples))
    return {float(q): (0 if q == 0 or areas.size == 0 else int(np.quantile(areas, q))) for q in quantiles}


def tune_watershed(probabilities: list[np.ndarray], samples: list[Sample], min_areas: Iterable[int] = (0, 10, 20, 40),
                   markers: Iterable[float] = MARKER_THRESHOLDS, masks: Iterable[float] = MASK_THRESHOLDS,
                   ) -> tuple[WatershedParams, float]:
    """Grid-search marker / mask thresholds and minimum area (pixels) for the best mean DSB score
    (over images; with several collections, the mean of their means, as :class:`ValidationScore`).

    One watershed per image and (marker, mask) pair; the minimum areas are then applied to its
    labels (:func:`~nucleiseg.postprocess.drop_small_objects`: dropping small objects does not
    change the others), so the grid costs ``len(markers) * len(masks)`` watersheds, not that
    times ``len(min_areas)``. Returns (best parameters, their mean score); ties keep the earlier
    grid point.
    """
    min_areas = sorted(set(int(a) for a in min_areas))
    sizes = Counter(s.collection for s in samples)  # several collections: the mean of their means
    weights = [1.0 / (len(sizes) * sizes[s.collection]) for s in samples] if len(sizes) > 1 else [1.0] * len(samples)
    best = (WatershedParams(), -1.0)
    for marker in markers:
        for mask in masks:
            totals = np.zeros(len(min_areas))
            for p, s, weight in zip(probabilities, samples, weights):
                labels = probabilities_to_labels(p, WatershedParams(marker, mask, 0))
                areas = np.bincount(labels.ravel())
                for j, min_area in enumerate(min_areas):
                    totals[j] += weight * dsb_score(s.labels, drop_small_objects(labels, min_area, areas))
            for j, min_area in enumerate(min_areas):
                score = totals[j] if len(sizes) > 1 else totals[j] / max(len(samples), 1)
                if score > best[1]:
                    best = (WatershedParams(marker, mask, min_area), float(score))
    return best


def collection_scores(score: ValidationScore) -> dict[str, float]:
    """The per-collection scores to record: none when there is only one collection."""
    return score.per_collection if len(score.per_collection) > 1 else {}


def tune_model(predictor, train_set: list[Sample], val_set: list[Sample]) -> ModelConfig:
    """``predictor``'s configuration with its watershed tuned on ``val_set`` and minimum-size
    candidates from ``train_set``.

    Changed entries: ``watershed`` (the tuned values), ``min_area_quantiles`` (the candidates,
    {quantile: pixels}) and ``validation`` (score and per-modality scores with the tuned values,
    the score with the model's current values as ``score_default_watershed``, the validation
    ImageIds; its checkpoint step kept).
    """
    probabilities = [predictor.probabilities_of_normalized(s.image) for s in val_set]
    before = score_probabilities(probabilities, val_set, predictor.watershed)
    candidates = min_area_candidates(train_set)
    tuned, _ = tune_watershed(probabilities, val_set, candidates.values())
    after = score_probabilities(probabilities, val_set, tuned)  # the same probabilities, no second pass
    old = predictor.config.validation
    validation = ValidationRecord(after.score, after.per_modality, old.step if old else None, before.score,
                                  sorted(s.image_id for s in val_set), collection_scores(after))
    return predictor.config.replace(watershed=tuned, validation=validation,
                                    min_area_quantiles={str(q): a for q, a in candidates.items()})
