"""Training the U-Net, in pipeline order.

- :mod:`~nucleiseg.training.config`: :class:`TrainConfig`, every option with its default;
- :mod:`~nucleiseg.training.samples`: the data in memory, the validation split, sampling weights;
- :mod:`~nucleiseg.training.augment`: random crops and augmentation;
- :mod:`~nucleiseg.training.loss`: cross-entropy + soft Dice;
- :mod:`~nucleiseg.training.state`: the training state (save / load) and the budget;
- :mod:`~nucleiseg.training.validation`: validation scores and watershed tuning;
- :mod:`~nucleiseg.training.ddp`: torchrun / DistributedDataParallel helpers;
- :mod:`~nucleiseg.training.prefetch`: the next batch drawn in a thread, each step's own generator;
- :mod:`~nucleiseg.training.loop`: :func:`train`, the loop.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "config": ["TrainConfig"],
    "loop": ["TrainingInterrupted", "train"],
    "validation": ["tune_model", "tune_watershed"],
})
