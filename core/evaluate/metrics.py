"""What each evaluation metric is: which way is better (higher, lower, or neither) and its kind
(a score, a loss, a count, or a statistic). The leaderboard ranks by it, the dashboard labels its
charts with it, and only scores get a per-compute-hour figure."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MetricInfo:
    direction: str | None  # "higher" | "lower" | None (not ranked)
    kind: str  # "score" | "loss" | "count" | "statistic"

    def to_dict(self) -> dict:
        return asdict(self)


SCORE, LOSS = MetricInfo("higher", "score"), MetricInfo("lower", "loss")
COUNT, STATISTIC = MetricInfo(None, "count"), MetricInfo(None, "statistic")

# (pattern, info), first match wins; names are the protocols' metric names (core/evaluate/*)
PATTERNS: tuple[tuple[str, MetricInfo], ...] = (
    (r"top\d+(@.*)?", SCORE),  # knn top1@k20, linear top1/top5, few-shot top1@1pct, finetune
    (r"accuracy|nmi|ari", SCORE),  # mlm masked-token accuracy, clustering
    (r"rankme|rankme_ratio", SCORE),  # health: a higher effective rank is a less collapsed embedding
    (r"perplexity|loss|nll", LOSS),
    (r"uniformity|class_alignment", MetricInfo("lower", "statistic")),  # Wang & Isola: lower is better
    (r"masked_tokens|n_.*|count", COUNT),
    (r"std_mean|std_min", STATISTIC),
)


def metric_info(name: str) -> MetricInfo:
    """The direction and kind of a metric; an unknown name is a statistic that is not ranked."""
    for pattern, info in PATTERNS:
        if re.fullmatch(pattern, name):
            return info
    return STATISTIC


def better(direction: str | None, a: float, b: float) -> bool:
    """Whether value a beats value b under the metric's direction."""
    return a > b if direction == "higher" else a < b if direction == "lower" else False
