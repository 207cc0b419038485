"""vidclip.models.clip: the frozen image CLIP (one model-spec parser, two backends, identity)."""
