"""Scale-out: images per second on a local Dask cluster of 1 and 2 workers (and in one process),
and block-wise against whole-image prediction of a mosaic of DSB2018 fluorescence tiles (DSB
score between the two, nuclei cut at block borders), optionally a large mosaic's time and peak
memory.

    python benchmarks/bench_scale.py ../shared/dsb2018/stage1_train [--big 8192] [--json FILE]

Same as ``nucleiseg bench scale``; results are recorded in benchmarks/README.md.
"""

import sys

from nucleiseg.cli import main

if __name__ == "__main__":
    main(["bench", "scale", *sys.argv[1:]])
