"""The leaderboard: per-cell result JSON under ``results/``, the schema, and the renderer that writes
``README.md``. Nothing here imports torch: ``python -m benchmark leaderboard --check`` runs in a second."""
