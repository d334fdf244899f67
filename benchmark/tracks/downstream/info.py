"""The downstream track as the board and the record schema see it."""

from benchmark.tracks.info import MetricTable, TrackInfo

INFO = TrackInfo(
    name="downstream",
    order=0,
    required_metrics=("clean_accuracy", "poisoned_accuracy", "accuracy_drop"),
    headline_metric="accuracy_drop",
    headline_description="test-accuracy drop of the linear head (points)",
    fallback_metric="accuracy_drop",
    budget_meaning="budget = poisoned points added, as a fraction of the clean training set (ε_d)",
    tables=(MetricTable("accuracy_drop", "test-accuracy drop of the linear head (points; higher = stronger attack)"),),
    defense_metrics=(("accuracy_drop", "accuracy drop against the undefended clean head (points)"),),
    restored_label="",
)
