"""Open-set recognition: whether a picture shows one of the model's classes at all.

A softmax classifier names one of its classes for every picture, a logo or a cheetah included. An open-set score
says how much a picture looks like the pictures of the known classes; below the checkpoint's threshold the
answer is "none of these", with the closest class still reported.

Every score is a small pure tensor function of the logits, the penultimate features
(``Classifier.forward_features``) and statistics of the training split's features, so the same computation runs
in PyTorch and inside an exported graph (no Python control flow on values, no in-place updates). Higher always
means "more like the known classes". The candidates:

- ``max_prob``: the top softmax probability of the (calibrated) logits; needs no statistics.
- ``energy``: logsumexp of the logits (Liu et al. 2020, "Energy-based Out-of-distribution Detection").
- ``mahalanobis``: minus the smallest squared Mahalanobis distance to a class mean, with one covariance shared
  by the classes (Lee et al. 2018), shrunk towards a multiple of the identity (Ledoit-Wolf): a few hundred
  training images do not determine a 1280-dimensional covariance. Stored as a whitening matrix.
- ``cosine``: the highest cosine similarity to a class mean direction, features centred on the training mean.
- ``knn1``, ``knn10``: the cosine similarity to the nearest / 10th nearest training picture (Sun et al. 2022,
  "Out-of-Distribution Detection with Deep Nearest Neighbors"), features centred on the training mean.

A threshold is fitted on validation scores of known-class pictures by a ``ThresholdRule``: either a quantile (the
share of known-class pictures that must still be accepted) or a spread (a number of standard deviations below
their mean score). It is one value per class (the class the model predicts), either the same for all (global) or
fitted on each class's own validation pictures (per class).

Where each part lives in a checkpoint: the statistics are tensors in ``model.safetensors`` under
``open_set.<name>`` (``OpenSet.tensors``), the rest (score name, thresholds, threshold rule, what it was fitted
on) is JSON under ``config.json``'s ``"open_set"`` (``OpenSet.record``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

TENSOR_PREFIX = "open_set."  # statistics' names in model.safetensors
# What training fits (the leave-one-class-out benchmark in BENCHMARKS.md chose them).
ADOPTED_SCORE = "cosine"
ADOPTED_PER_CLASS = False
# Older checkpoints carry no fitted score: they use the top probability with this threshold (BENCHMARKS.md).
DEFAULT_MAX_PROB_THRESHOLD = 0.7

Stats = Mapping[str, torch.Tensor]
ScoreFn = Callable[[torch.Tensor, torch.Tensor, Stats], torch.Tensor]


# --------------------------------------------------------------------------------------------- scores


def max_prob_score(logits: torch.Tensor, features: torch.Tensor, stats: Stats) -> torch.Tensor:
    return logits.softmax(dim=1).amax(dim=1)


def energy_score(logits: torch.Tensor, features: torch.Tensor, stats: Stats) -> torch.Tensor:
    return torch.logsumexp(logits, dim=1)


def mahalanobis_score(logits: torch.Tensor, features: torch.Tensor, stats: Stats) -> torch.Tensor:
    # ||(f - mean_c) W||^2 = ||f W - mean_c W||^2: whiten once, then Euclidean distances to the whitened means.
    whitened = features @ stats["whitening"]
    distances = torch.cdist(whitened, stats["class_means"] @ stats["whitening"])
    return -distances.square().amin(dim=1)


def cosine_score(logits: torch.Tensor, features: torch.Tensor, stats: Stats) -> torch.Tensor:
    directions = F.normalize(features - stats["centre"], dim=1)
    return (directions @ stats["class_directions"].T).amax(dim=1)


def knn_score(k: int) -> ScoreFn:
    """The cosine similarity to the k-th nearest training picture (k fixed: a constant in an exported graph)."""

    def score(logits: torch.Tensor, features: torch.Tensor, stats: Stats) -> torch.Tensor:
        directions = F.normalize(features - stats["centre"], dim=1)
        similarities = directions @ stats["train_directions"].T
        kth = min(k, stats["train_directions"].shape[0])
        return similarities.topk(kth, dim=1).values[:, kth - 1]

    return score


# --------------------------------------------------------------------------------------------- statistics


def _class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    one_hot = F.one_hot(labels, num_classes).to(features.dtype)  # [N, C]
    return (one_hot.T @ features) / one_hot.sum(dim=0).clamp(min=1).unsqueeze(1)


def ledoit_wolf(centred: torch.Tensor) -> torch.Tensor:
    """The Ledoit-Wolf shrunk covariance of centred rows [N, D]: (1 - s) S + s mu I, s chosen from the data
    (Ledoit & Wolf 2004, the estimator scikit-learn's ``LedoitWolf`` computes)."""
    n, d = centred.shape
    sample = centred.T @ centred / n
    mu = sample.diagonal().mean()
    target_gap = (sample - mu * torch.eye(d, dtype=sample.dtype)).square().sum() / d
    squares = centred.square()
    spread = ((squares.T @ squares) / n - sample.square()).sum() / (d * n)
    shrinkage = (spread.clamp(max=target_gap) / target_gap) if target_gap > 0 else torch.tensor(1.0)
    return (1 - shrinkage) * sample + shrinkage * mu * torch.eye(d, dtype=sample.dtype)


def _mahalanobis_stats(features, labels, num_classes) -> dict[str, torch.Tensor]:
    means = _class_means(features, labels, num_classes)
    covariance = ledoit_wolf(features - means[labels])
    # W = V diag(1/sqrt(lambda)) V^T with covariance = V diag(lambda) V^T, so ||x W||^2 = x^T covariance^-1 x.
    eigenvalues, vectors = torch.linalg.eigh(covariance)
    whitening = vectors @ torch.diag(eigenvalues.clamp(min=1e-12).rsqrt()) @ vectors.T
    return {"class_means": means, "whitening": whitening}


def _cosine_stats(features, labels, num_classes) -> dict[str, torch.Tensor]:
    centre = features.mean(dim=0)
    means = _class_means(features - centre, labels, num_classes)
    return {"centre": centre, "class_directions": F.normalize(means, dim=1)}


def _knn_stats(features, labels, num_classes) -> dict[str, torch.Tensor]:
    centre = features.mean(dim=0)
    return {"centre": centre, "train_directions": F.normalize(features - centre, dim=1)}


@dataclass(frozen=True)
class ScoreKind:
    name: str
    description: str
    compute: ScoreFn
    fit: Callable[[torch.Tensor, torch.Tensor, int], dict[str, torch.Tensor]] | None  # None: needs no statistics
    bounds: tuple[float, float] | None = None  # the values the score can take, when it is bounded


SCORES: dict[str, ScoreKind] = {
    kind.name: kind for kind in (
        ScoreKind("max_prob", "the highest calibrated class probability", max_prob_score, None, (0.0, 1.0)),
        ScoreKind("energy", "the energy score (logsumexp of the logits)", energy_score, None),
        ScoreKind("mahalanobis", "closeness to the nearest class mean (Mahalanobis distance of the features, "
                                 "shared shrunk covariance)", mahalanobis_score, _mahalanobis_stats),
        ScoreKind("cosine", "cosine similarity of the features to the nearest class mean", cosine_score,
                  _cosine_stats, (-1.0, 1.0)),
        ScoreKind("knn1", "cosine similarity of the features to the nearest training picture", knn_score(1),
                  _knn_stats, (-1.0, 1.0)),
        ScoreKind("knn10", "cosine similarity of the features to the 10th nearest training picture",
                  knn_score(10), _knn_stats, (-1.0, 1.0)),
    )
}


def score_kind(name: str) -> ScoreKind:
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown open-set score {name!r}; choose one of {', '.join(SCORES)}") from None


def fit_statistics(name: str, features: torch.Tensor, labels: torch.Tensor, num_classes: int
                   ) -> dict[str, torch.Tensor]:
    """The statistics score ``name`` needs, from training features [N, D] and labels [N] (float32, CPU)."""
    kind = score_kind(name)
    if kind.fit is None:
        return {}
    features = features.detach().double().cpu()
    stats = kind.fit(features, labels.detach().cpu(), num_classes)
    return {key: value.float().contiguous() for key, value in stats.items()}


def compute_scores(name: str, logits: torch.Tensor, features: torch.Tensor, stats: Stats) -> torch.Tensor:
    """Score [N] of each picture (higher: more like the known classes), in float32."""
    stats = {key: value.to(features.device, torch.float32) for key, value in stats.items()}
    return score_kind(name).compute(logits.float(), features.float(), stats)


# --------------------------------------------------------------------------------------------- thresholds


def acceptance_threshold(scores: torch.Tensor, acceptance: float) -> float:
    """The highest threshold that still accepts (score >= threshold) at least ``acceptance`` of ``scores``;
    -inf (accept everything) for no scores."""
    if not 0 < acceptance <= 1:
        raise ValueError(f"acceptance must be in (0, 1], got {acceptance}")
    ordered = scores.detach().double().flatten().sort().values
    if len(ordered) == 0:
        return -math.inf
    rejectable = math.floor(round((1 - acceptance) * len(ordered), 9))  # round: 0.97 * 100 is 96.99999...
    return float(ordered[rejectable])


def spread_threshold(scores: torch.Tensor, deviations: float) -> float:
    """``deviations`` standard deviations below the mean of ``scores``; -inf (accept everything) for fewer than
    two scores, where no spread is known."""
    if deviations < 0:
        raise ValueError(f"deviations must be >= 0, got {deviations}")
    values = scores.detach().double().flatten()
    if len(values) < 2:
        return -math.inf
    return float(values.mean() - deviations * values.std(correction=0))


@dataclass(frozen=True)
class ThresholdRule:
    """How a threshold is fitted on the validation scores of known-class pictures.

    ``quantile``: the highest threshold that accepts ``value`` (a share) of them. ``spread``: ``value`` standard
    deviations below their mean. A quantile of a few dozen validation scores sits at the lowest of them, and
    test pictures spread further than that; a spread leaves a margin that grows with how widely the known
    pictures score."""

    kind: str
    value: float

    KINDS = ("quantile", "spread")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown threshold rule {self.kind!r}; choose one of {', '.join(self.KINDS)}")
        if self.kind == "quantile" and not 0 < self.value <= 1:
            raise ValueError(f"a quantile rule accepts a share in (0, 1], got {self.value}")
        if self.kind == "spread" and self.value < 0:
            raise ValueError(f"a spread rule needs deviations >= 0, got {self.value}")

    def threshold(self, scores: torch.Tensor) -> float:
        if self.kind == "quantile":
            return acceptance_threshold(scores, self.value)
        return spread_threshold(scores, self.value)

    @property
    def fewest_pictures(self) -> int | float:
        """How many validation pictures one class needs for a threshold of its own: a quantile must be able to
        leave out at least one picture, a spread needs enough pictures for its standard deviation to mean much."""
        if self.kind == "quantile":
            return math.ceil(1 / (1 - self.value)) if self.value < 1 else math.inf
        return 20

    def words(self) -> str:
        if self.kind == "quantile":
            return f"to accept {self.value:.0%} of known-class validation pictures"
        return f"{self.value:g} standard deviations below the mean score of known-class validation pictures"

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "ThresholdRule":
        """From config.json's "open_set": its "threshold_rule", or the "acceptance" of checkpoints that record a
        quantile only."""
        if record.get("threshold_rule"):
            return cls(str(record["threshold_rule"]["kind"]), float(record["threshold_rule"]["value"]))
        return cls("quantile", float(record.get("acceptance") or 1.0))


# The threshold rule training fits (leave one class out in BENCHMARKS.md chose it).
ADOPTED_RULE = ThresholdRule("spread", 3.0)


def fit_thresholds(scores: torch.Tensor, predicted: torch.Tensor, num_classes: int, rule: ThresholdRule,
                   per_class: bool) -> torch.Tensor:
    """Thresholds [num_classes] (one per predicted class) fitted by ``rule`` on the validation ``scores``.

    Global: one value for every class. Per class: each class's value is fitted on the pictures predicted as that
    class; a class with fewer than ``rule.fewest_pictures`` of them keeps the global value."""
    overall = rule.threshold(scores)
    thresholds = torch.full((num_classes,), overall, dtype=torch.float32)
    if not per_class:
        return thresholds
    for c in range(num_classes):
        mine = scores[predicted == c]
        if len(mine) >= rule.fewest_pictures:
            thresholds[c] = rule.threshold(mine)
    return thresholds


def accepts(scores: torch.Tensor, predicted: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """True where a picture counts as one of the known classes: its score reaches its predicted class's
    threshold."""
    return scores >= thresholds.to(scores.device)[predicted]


# --------------------------------------------------------------------------------------------- measures


def auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    """Probability that a known picture scores higher than an unknown one (ties count half)."""
    if len(known) == 0 or len(unknown) == 0:
        return math.nan
    known, unknown = known.double().flatten(), unknown.double().flatten()
    above = (known[:, None] > unknown[None, :]).double().mean()
    ties = (known[:, None] == unknown[None, :]).double().mean()
    return float(above + ties / 2)


def fpr_at_tpr(known: torch.Tensor, unknown: torch.Tensor, tpr: float = 0.95) -> float:
    """Share of unknown pictures accepted at the threshold that accepts ``tpr`` of the known pictures."""
    if len(unknown) == 0:
        return math.nan
    return float((unknown >= acceptance_threshold(known, tpr)).double().mean())


# --------------------------------------------------------------------------------------------- one checkpoint's


@dataclass
class OpenSet:
    """A checkpoint's open-set rule: score, statistics, one threshold per class."""

    score: str
    thresholds: torch.Tensor  # [C]: a picture predicted as class c is known when its score >= thresholds[c]
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    rule: ThresholdRule | None = None  # how the thresholds were fitted; None for the fallback
    per_class: bool = False
    fitted: dict[str, Any] | None = None  # what it was fitted on; None for the fallback of older checkpoints

    @classmethod
    def fallback(cls, num_classes: int) -> "OpenSet":
        """The rule of a checkpoint that records none: top probability >= DEFAULT_MAX_PROB_THRESHOLD."""
        return cls("max_prob", torch.full((num_classes,), DEFAULT_MAX_PROB_THRESHOLD))

    @classmethod
    def fit(cls, score: str, train_features: torch.Tensor, train_labels: torch.Tensor, val_logits: torch.Tensor,
            val_features: torch.Tensor, rule: ThresholdRule, per_class: bool = False) -> "OpenSet":
        """Statistics from the training split, thresholds from the validation split."""
        num_classes = val_logits.shape[1]
        stats = fit_statistics(score, train_features, train_labels, num_classes)
        val_scores = compute_scores(score, val_logits.cpu(), val_features.cpu(), stats)
        predicted = val_logits.argmax(dim=1).cpu()
        thresholds = fit_thresholds(val_scores, predicted, num_classes, rule, per_class)
        accepted = float(accepts(val_scores, predicted, thresholds).double().mean()) if len(val_scores) else 1.0
        fitted = {"statistics_from": "train", "train_images": len(train_labels), "thresholds_from": "val",
                  "val_images": len(val_scores), "val_accepted": round(accepted, 5)}
        return cls(score, thresholds, stats, rule, per_class, fitted)

    @property
    def default_threshold(self) -> float | None:
        """The one threshold every class shares; None for per-class thresholds that differ."""
        values = self.thresholds.unique()
        return float(values[0]) if len(values) == 1 else None

    def scores(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return compute_scores(self.score, logits, features, self.stats)

    def accepts(self, scores: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        return accepts(scores, predicted, self.thresholds)

    def report(self, predicted: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """On known-class images: the share this rule accepts, and the accuracy that leaves when images rejected
        as "none of these" count as wrong."""
        accepted = self.accepts(scores, predicted)
        right = predicted == targets
        return {"score": self.score, "fitted": self.fitted is not None,
                "accepted": round(float(accepted.double().mean()), 6),
                "accuracy_when_rejections_count_as_wrong": round(float((right & accepted).double().mean()), 6)}

    def how_fitted(self) -> str | None:
        """The threshold rule in words ("fitted on N validation pictures, …"); None for the fallback."""
        if self.rule is None or self.fitted is None:
            return None
        return f"fitted on {self.fitted.get('val_images', '?')} validation pictures, {self.rule.words()}"

    @classmethod
    def how_fitted_from_record(cls, record: Mapping[str, Any]) -> str | None:
        """``how_fitted`` from config.json's "open_set" alone (no weights read)."""
        return cls(str(record.get("score")), torch.zeros(0), rule=ThresholdRule.from_record(record),
                   fitted=record.get("fitted")).how_fitted()

    def record(self) -> dict[str, Any]:
        """The JSON part (config.json's "open_set")."""
        rule = {"threshold_rule": self.rule.record(), "threshold_rule_words": self.rule.words()} if self.rule else {}
        return {"score": self.score, "description": score_kind(self.score).description,
                "thresholds": [round(float(t), 6) for t in self.thresholds], "per_class": self.per_class,
                **rule, "statistics": sorted(self.stats), "fitted": self.fitted}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor part (model.safetensors), names prefixed with TENSOR_PREFIX."""
        return {TENSOR_PREFIX + key: value.contiguous() for key, value in self.stats.items()}

    @classmethod
    def from_checkpoint(cls, record: Mapping[str, Any] | None, tensors: Mapping[str, torch.Tensor],
                        num_classes: int) -> "OpenSet":
        """The rule a checkpoint records (``record`` from config.json, ``tensors`` from its weights file), or
        the fallback when it records none. Raises ValueError for a record that does not fit."""
        if not record:
            return cls.fallback(num_classes)
        score = score_kind(str(record.get("score")))
        stats = {k[len(TENSOR_PREFIX):]: v.float() for k, v in tensors.items() if k.startswith(TENSOR_PREFIX)}
        missing = sorted(set(record.get("statistics") or []) - set(stats))
        thresholds = torch.tensor([float(t) for t in record.get("thresholds") or []], dtype=torch.float32)
        if missing or len(thresholds) != num_classes:
            problem = f"tensors {', '.join(TENSOR_PREFIX + m for m in missing)} missing" if missing else \
                f"{len(thresholds)} thresholds for {num_classes} classes"
            raise ValueError(f"open-set record of score {score.name!r} does not fit: {problem}")
        return cls(score.name, thresholds, stats, ThresholdRule.from_record(record), bool(record.get("per_class")),
                   record.get("fitted"))


def fit_adopted_rule(model, train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor,
                     device: torch.device, plan) -> OpenSet:
    """The adopted rule (ADOPTED_SCORE, thresholds by ADOPTED_RULE) of ``model``: statistics of the training images'
    features, thresholds on the validation images (uint8, unaugmented, at the inference size)."""
    _, train_features = logits_and_features(model, train_images, device, plan)
    val_logits, val_features = logits_and_features(model, val_images, device, plan)
    return OpenSet.fit(ADOPTED_SCORE, train_features.cpu(), train_labels.cpu(), val_logits.cpu(), val_features.cpu(),
                       ADOPTED_RULE, per_class=ADOPTED_PER_CLASS)


@torch.no_grad()
def logits_and_features(model, images: torch.Tensor, device: torch.device, plan) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C], features [N, D]) of uint8 images from ONE forward pass each, float32 on ``device``,
    batched as the execution ``plan`` says (the same passes as ``pokedemo.inference.infer_logits``)."""
    model.eval()
    classes = model.head.out_features

    def both(x: torch.Tensor) -> torch.Tensor:
        with plan.autocast():
            features = model.forward_features(x)
            return torch.cat([model.head(features).float(), features.float()], dim=1)

    if len(images) == 0:
        return torch.zeros((0, classes), device=device), torch.zeros((0, model.feature_dim), device=device)
    joined = plan.forward_in_batches(both, images)
    return joined[:, :classes], joined[:, classes:]
