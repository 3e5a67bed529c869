"""The DSB2018 score: ours vs StarDist's ``matching`` vs the Kaggle-kernel formulation.

    pip install --no-deps stardist csbdeep six     # benchmark-only, never a runtime dependency
    python benchmarks/bench_score.py [SOURCE] [--no-huge] [--json FILE]     # SOURCE: e.g. stage1_train/

Same as ``nucleiseg bench score``; results are recorded in benchmarks/README.md.
"""

import sys

from nucleiseg.cli import main

if __name__ == "__main__":
    main(["bench", "score", *sys.argv[1:]])
