"""The pre-training availability track as the board and the record schema see it."""

from benchmark.tracks.info import ExtraColumn, MetricTable, TrackInfo

INFO = TrackInfo(
    name="pretrain-availability",
    order=1,
    required_metrics=("clean_accuracy", "poisoned_accuracy", "accuracy_drop"),
    headline_metric="accuracy_drop_poisoned_probe",
    headline_description="accuracy drop with the probe trained on the poisoned images (points)",
    fallback_metric="accuracy_drop",
    budget_meaning="budget = fraction of pre-training images perturbed (p), each within ℓ∞ ε",
    tables=(
        MetricTable("accuracy_drop", "linear-probe accuracy drop, probe trained on the clean labeled set (probe=clean, "
                                     "the published protocol)"),
        MetricTable("accuracy_drop_poisoned_probe", "accuracy drop, probe trained on the poisoned training images "
                                                    "(probe=poisoned)"),
        MetricTable("supervised_accuracy_drop", "cross-evaluation: accuracy drop of a supervised victim trained on the "
                                                "poisoned labeled set"),
    ),
    defense_metrics=(("accuracy_drop", "accuracy drop against the undefended clean encoder (points), probe=clean"),
                     ("accuracy_drop_poisoned_probe", "accuracy drop against the undefended clean encoder (points), "
                                                      "probe=poisoned")),
    headline_columns=(ExtraColumn("accuracy_drop", "probe=clean drop (the published protocol)"),),
    restored_label=" (probe=poisoned)",
    shared_sources=("benchmark/tracks/_pretrain.py", "benchmark/tracks/_pretrain_interface.py"),
)
