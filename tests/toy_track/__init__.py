"""A fourth, toy track, added from the test suite with no edit outside this folder (``tests/test_toy_track.py``):
the victim is a nearest-class-mean classifier on raw pixels, the attacker adds labelled images. It exists to
show that a track is one package: its declaration (``info``), its plugin-side types (``interface``), its
threat-model check (``validate``), its runner (``track``) and an attack for it (``toy_label_flip``)."""
