"""The leaderboard: per-cell result JSON under ``results/``, the schema, the renderer that writes
``README.md``, the HTML page (``site``) and the figures (``plots``). Nothing here imports torch:
``python -m benchmark leaderboard --check`` (board, page, regenerated figures, source hashes of every
record) takes seconds."""
