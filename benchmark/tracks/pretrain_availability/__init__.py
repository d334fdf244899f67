"""The pre-training availability track: unlabeled pre-training images perturbed within an ℓ∞ ball
(``info``: what the board shows; ``track``: how a cell runs; ``work``: what it costs; ``figures``)."""
