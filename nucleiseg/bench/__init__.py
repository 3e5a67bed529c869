"""``nucleiseg bench``: timing what users come for, against references in the same run.

- :mod:`~nucleiseg.bench.weightmap`: U-Net weight maps vs the per-nucleus reference and one SciPy EDT;
- :mod:`~nucleiseg.bench.score`: the DSB score vs StarDist's ``matching`` and the Kaggle kernel;
- :mod:`~nucleiseg.bench.predict`: inference time per image size;
- :mod:`~nucleiseg.bench.train`: training steps per second, float32 vs bf16, batch drawing;
- :mod:`~nucleiseg.bench.slide`: whole-slide prediction, lazy slide path vs whole image in memory;
- :mod:`~nucleiseg.bench.references`: the reference implementations they time against.

Each runs on the bundled samples by default and on any folder the user names. Every figure is a
time measured in the same process and run as its reference, so ratios hold on any machine.
"""
