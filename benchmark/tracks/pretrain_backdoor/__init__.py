"""The pre-training backdoor track: one package (see :mod:`benchmark.tracks.base`)."""
