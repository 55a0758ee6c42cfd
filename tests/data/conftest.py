"""tests/data: the dataset registry, on-disk layouts, splits, loaders."""
