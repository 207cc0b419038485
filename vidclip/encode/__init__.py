"""vidclip.encode: video files -> frame embeddings, on the local engine or on Ray."""
