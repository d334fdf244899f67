"""The downstream track: poisoned points added to the training set of a frozen encoder's linear head
(``info``: what the board shows; ``track``: how a cell runs; ``work``: what it costs; ``figures``)."""
