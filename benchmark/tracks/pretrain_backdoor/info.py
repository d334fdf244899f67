"""The pre-training backdoor track as the board and the record schema see it."""

from benchmark.tracks.info import ExtraColumn, MetricTable, TrackInfo

INFO = TrackInfo(
    name="pretrain-backdoor",
    order=3,
    required_metrics=("clean_accuracy", "poisoned_accuracy", "attack_success_rate", "attack_success_rate_clean_encoder",
                      "asr_gain"),
    headline_metric="asr_gain",
    headline_description="attack-success-rate gain over the clean encoder with the same trigger (points)",
    fallback_metric="attack_success_rate",
    budget_meaning="budget = poisoned pre-training images, as a fraction of the pre-training set",
    tables=(
        MetricTable("asr_gain", "attack-success-rate gain over the clean encoder, same trigger and probe protocol "
                                "(points; ASR = share of the non-target-class test images that the probe puts in the "
                                "target class once the harness applies the attack's trigger)"),
        MetricTable("attack_success_rate", "attack success rate of the backdoored victim (%)"),
        MetricTable("attack_success_rate_clean_encoder", "the trigger on the clean encoder (%): what the trigger does "
                                                         "without a single poison (the trigger-only control)"),
        MetricTable("clean_accuracy_change", "clean-accuracy change against the clean encoder (points)", higher=False),
    ),
    defense_metrics=(("asr_gain", "attack-success-rate gain over the clean encoder (points)"),
                     ("attack_success_rate", "attack success rate (%)"),
                     ("poisoned_accuracy", "clean-test accuracy of the poisoned victim (%)")),
    headline_columns=(ExtraColumn("attack_success_rate", "ASR (%)"),
                      ExtraColumn("attack_success_rate_clean_encoder", "trigger only (%)"),
                      ExtraColumn("clean_accuracy_change", "clean acc. change")),
    shared_sources=("benchmark/tracks/_pretrain.py", "benchmark/tracks/_pretrain_interface.py"),
)
