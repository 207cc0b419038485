"""vidclip.retrieval: score normalisation and fusion shared by index search and rerank."""
