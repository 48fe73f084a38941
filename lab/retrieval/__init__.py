"""Image retrieval: encode a gallery, search it exactly, evaluate it (python -m lab.retrieve).

- cli, commands, scoring: the argument parser, the index/query/evaluate commands, and the
  metrics with each query's own gallery entry left out;
- files: which images a folder holds and their labels (the class sub-folder);
- preprocess, encoder: how a file becomes the model's input, and files to unit-length features;
- backbones, checkpoint_backbone: torchvision (ImageNet or local weights) or a lab run's model,
  recorded in the index with the preprocessing so queries are encoded like the gallery;
- index: the pickle-free index folder (features.npy + index.json), written atomically;
- search: exact batched top-k by L2 distance on unit-length features;
- contact_sheet: the query and its results as one PNG.
"""
