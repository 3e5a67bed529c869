#!/usr/bin/env bash
# Issue 24 item 5 in one run on a machine with an NVIDIA GPU: the CUDA tests, `bench predict` on
# CUDA and a 1.07-gigapixel slide end to end (network on CUDA, the blocks' watershed, measurements
# and outlines in worker processes). Run from the repository root:
#   bash benchmarks/gpu_check.sh            # OUT=folder for the log and JSON (default gpu_check_out)
# With the session's device tool (its image has PyTorch, SciPy, scikit-image, tifffile, numba,
# OpenCV, click and tqdm, not imagecodecs, zarr or shapely): first, here, put their Python 3.12
# wheels in .whl (git-ignored; see benchmarks/README.md "GPU check"), then one call:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# About 6-8 minutes; every step has its own time limit, so a slow one does not cost the others.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: could not install .whl/"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "== machine"; date -u; nvidia-smi -L; lscpu | grep "Model name"; nproc
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
echo "== CUDA tests"
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
echo "== bench predict (CUDA)"
timeout 120 python3 -m nucleiseg -q bench predict --device cuda --json "$OUT/bench_predict.json"
echo "== bench slide, 32768 x 32768 (CUDA; default worker processes)"
timeout 420 python3 -m nucleiseg -q bench slide --side 32768 --no-whole-image --device cuda \
  --json "$OUT/bench_slide.json"
echo "== done"; date -u
