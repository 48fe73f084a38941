"""Image retrieval: encode a gallery, search it exactly, evaluate it (python -m lab.retrieve).

- files: which images a folder holds and their labels (the class sub-folder);
- encoder: backbones (torchvision with ImageNet or local weights, or a lab checkpoint) and
  the preprocessing, both recorded in the index so queries are encoded like the gallery;
- index: the pickle-free index folder (features.npy + index.json), written atomically;
- search: exact batched top-k by L2 distance on unit-length features;
- contact_sheet: the query and its results as one PNG.
"""
