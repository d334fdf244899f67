"""Tracks: one package per threat track (``downstream``, ``pretrain_availability``, ``pretrain_targeted``, and any
named in ``POISONBENCH_TRACKS``). :mod:`benchmark.tracks.info` declares what the board knows about a track
(no torch), :mod:`benchmark.tracks.base` the :class:`~benchmark.tracks.base.Track` that runs its cells;
:mod:`benchmark.tracks.common` and :mod:`benchmark.tracks._pretrain` hold what several tracks share."""
