"""Judging a frame: is this body a new, complete frame worth storing?

Lives here: the byte facts of a JPEG (jpeg.py: SHA-256, SOI/EOI, dimensions, EXIF time,
no decode), the reduced decode and perceptual fingerprint with region-of-interest masks
(fingerprint.py), the local change test on tone-matched cells of that decode (change.py),
the judge (judge.py: the whole validity chain from `unchanged` to `near_duplicate`, ending
in a Verdict and its Decision) and the `compare` command (compare.py, commands.py). Pure
functions on bytes; the camera task runs the decode in a worker thread.

May import: config.
"""
