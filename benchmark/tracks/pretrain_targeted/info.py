"""The pre-training targeted track as the board and the record schema see it."""

from benchmark.tracks.info import ExtraColumn, MetricTable, TrackInfo

_SMALL_SCALE = ("At this scale ASR moves little (a few held-out targets, a small encoder): read the target-class "
                "probability and margin gains over the clean encoder on the same targets beside it (a well-fitted probe "
                "gives a wrong class ≈ 0.1 % probability, so the probability saturates; the margin, in logits, does not), "
                "the share of targets pulled towards their class, and the decoy-reference control (references from "
                "another class), which should not raise the target class.")

INFO = TrackInfo(
    name="pretrain-targeted",
    order=2,
    required_metrics=("clean_accuracy", "poisoned_accuracy", "attack_success_rate"),
    headline_metric="asr_gain",
    headline_description="attack-success-rate gain over no attack on the same targets (points)",
    fallback_metric="attack_success_rate",
    budget_meaning="budget = injected images, as a fraction of the pre-training set",
    tables=(
        MetricTable("asr_gain", "attack-success-rate gain over no attack on the same targets (points; targets the clean "
                                "victim already puts in the target class are excluded)"),
        MetricTable("target_probability_gain", "target-class probability gain over the clean encoder on the same targets "
                                               "(points of probability)"),
        MetricTable("target_margin_gain", "target-class margin gain over the clean encoder on the same targets (logits; "
                                          "margin = target-class logit − largest other logit, a target counts as a success "
                                          "when it is > 0)"),
        MetricTable("targets_pulled", "targets whose target-class margin rose against the clean encoder (%; the decoy "
                                      "control gives the null)"),
        MetricTable("attack_success_rate", "attack success rate on the target inputs (%; the no-attack rate on them is 0 "
                                           "by construction)"),
        MetricTable("asr_gain_augmented", "attack-success-rate gain on augmented target inputs (points)"),
        MetricTable("clean_accuracy_change", "clean-accuracy change against the clean encoder (points)", higher=False),
    ),
    defense_metrics=(("asr_gain", "attack-success-rate gain over no attack (points)"),
                     ("target_probability_gain", "target-class probability gain over the clean encoder (points)"),
                     ("target_margin_gain", "target-class margin gain over the clean encoder (logits)"),
                     ("attack_success_rate", "attack success rate (%)"),
                     ("poisoned_accuracy", "clean-test accuracy of the poisoned victim (%)")),
    headline_columns=(ExtraColumn("target_probability_gain", "target-prob. gain"),
                      ExtraColumn("target_margin_gain", "margin gain (logits)"),
                      ExtraColumn("targets_pulled", "targets pulled (%)")),
    small_scale_notes={"smoke": _SMALL_SCALE, "cpu": _SMALL_SCALE},
    shared_sources=("benchmark/tracks/_pretrain.py", "benchmark/tracks/_pretrain_interface.py"),
)
