"""Inference speed: ms per image and megapixels per second for one bundled sample of each size
(256 x 256 to 1024 x 1024), or of the images given, with and without TTA, split into network and
watershed.

    python benchmarks/bench_inference.py [IMAGES...] [--device cuda] [--no-tta] [--json FILE]

Same as ``nucleiseg bench predict``; results are recorded in benchmarks/README.md.
"""

import sys

from nucleiseg.cli import main

if __name__ == "__main__":
    main(["bench", "predict", *sys.argv[1:]])
