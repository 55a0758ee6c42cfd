"""tests/models: the backbone registry, weights, adapters."""
