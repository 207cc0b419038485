"""vidclip.serve: the FastAPI app and web page over a library index (``vidclip serve DIR``).

``create_app(index)`` builds the app (see :mod:`vidclip.serve.app`); it is imported lazily so that
registering the CLI verb does not import FastAPI.
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

DEFAULT_MAX_QUERY_CHARS = 500  # CLIP's text encoder sees 77 tokens; 500 characters is plenty
DEFAULT_MAX_K = 100
DEFAULT_MAX_RERANK = 1000  # = vidclip.index.search.MAX_RERANK (kept here so this module imports nothing heavy)
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024  # POST /search/image bodies; larger ones are 413
# At most this many POST /search/image requests decode and encode at once; more wait, holding no
# thread. The model encodes one image at a time anyway, and one decode holds 100-230 MB while PIL
# reads an 8K picture (RGB; RGBA or palette plus its RGB copy) before shrinking it.
DEFAULT_MAX_IMAGE_DECODES = 2
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

__all__ = ["create_app", "DEFAULT_MAX_QUERY_CHARS", "DEFAULT_MAX_K", "DEFAULT_MAX_RERANK", "DEFAULT_MAX_IMAGE_BYTES",
           "DEFAULT_MAX_IMAGE_DECODES", "LOOPBACK_HOSTS"]


__getattr__ = lazy_getattr(globals(), {"create_app": "vidclip.serve.app"})
