"""vidclip.models.temporal: temporal modules behind one interface, and their registry."""
