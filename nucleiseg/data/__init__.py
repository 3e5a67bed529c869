"""Reading annotations and images into label images.

- :mod:`~nucleiseg.data.images`: image and label-image files as stored;
- :mod:`~nucleiseg.data.dsb2018`: the DSB2018 folder layout, with a per-image defect report;
- :mod:`~nucleiseg.data.rle`: Kaggle run-length encoding and CSV files;
- :mod:`~nucleiseg.data.sources`: where images and label images come from (files, folders, CSVs);
- :mod:`~nucleiseg.data.split`: image modality and the fixed DSB2018 validation split;
- :mod:`~nucleiseg.data.ids`: the ImageId check.
"""
