"""Inference speed: ms per image and megapixels per second for 256x256, 520x696 and 1024x1024
bundled samples, with and without TTA, split into network and watershed.

    python benchmarks/bench_inference.py [--device cuda] [--no-tta] [--json FILE]

Same as ``nucleiseg bench predict``; results are recorded in benchmarks/README.md.
"""

import sys

from nucleiseg.cli import main

if __name__ == "__main__":
    main(["bench", "predict", *sys.argv[1:]])
