"""CC-Tuning (arXiv 2506.00875): cross-lingual connection at the latent level.

`method` is the training method (the Decision Maker picks a layer of the English prompt's
feed-forward outputs, added at the tag position of the non-English prompt); `transform_matrix`
fits the matrix that stands in for the English prompt at inference; `inference` runs a checkpoint
the way the paper evaluates it.
"""
