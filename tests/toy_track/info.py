"""The toy track as the board and the record schema see it."""

from benchmark.tracks.info import MetricTable, TrackInfo

INFO = TrackInfo(
    name="toy-nearest-mean",
    order=90,
    required_metrics=("clean_accuracy", "poisoned_accuracy", "accuracy_drop"),
    headline_metric="accuracy_drop",
    headline_description="test-accuracy drop of a nearest-class-mean classifier on pixels (points)",
    fallback_metric="accuracy_drop",
    budget_meaning="budget = labelled images added, as a fraction of the training set",
    tables=(MetricTable("accuracy_drop", "test-accuracy drop of the nearest-class-mean classifier (points)"),),
)
