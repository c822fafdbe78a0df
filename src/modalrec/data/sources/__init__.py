"""Sources: each reads one outside format into a ``Dataset`` held in memory.

A source validates everything before anything is written (``modalrec.data.output`` then saves it
atomically). One module per format: ``folder`` (a user's own CSV/TSV/JSONL and images), ``elliot``
(train/valid/test files), ``mmrec`` (``.inter`` with ``x_label`` plus feature matrices),
``movielens`` (a local ml-100k folder, posters, overviews), ``synthetic`` and ``amazon2023``.
``tables`` and ``images`` are the shared readers; ``fixed`` builds a data set with an imported split.
"""
