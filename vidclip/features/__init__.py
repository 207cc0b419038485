"""vidclip.features: the frame-feature store, file identity, cache checks and the pooler."""
