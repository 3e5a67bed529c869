"""U-Net weight maps on real DSB2018 data: ours vs the per-nucleus reference vs one SciPy EDT.

    python benchmarks/bench_weightmap.py [SOURCE] [--limit N] [--no-reference] [--json FILE]   # SOURCE: e.g. stage1_train/

Same as ``nucleiseg bench weightmap``; results are recorded in benchmarks/README.md.
"""

import sys

from nucleiseg.cli import main

if __name__ == "__main__":
    main(["bench", "weightmap", *sys.argv[1:]])
