"""The pre-training targeted track: images injected into pre-training so that chosen inputs get a chosen
class (``info``: what the board shows; ``track``: how a cell runs; ``work``: what it costs; ``figures``)."""
