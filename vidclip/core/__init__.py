"""vidclip.core: what every layer shares (errors, atomic file writes, lazy exports, processes, text input)."""
