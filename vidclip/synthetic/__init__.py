"""vidclip.synthetic: the synthetic world (videos, scenes, actions, captions, example libraries)."""
