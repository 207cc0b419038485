"""The HTTP API and web page over a :class:`~vidclip.index.search.VideoIndex`.

Routes (OpenAPI schema at ``/openapi.json``; FastAPI's interactive ``/docs`` page fetches Swagger
UI from a CDN, so it is blank offline while ``/openapi.json`` always works)::

    GET /                           the search page (static HTML/CSS/JS, no build step, no CDN)
    GET /search?q=TEXT&k=10         ranked hits: score, time span, thumbnail and stream URLs; &mode=,
                                    filters &path= &min_duration= &max_duration= &modified_after=
                                    &modified_before= &meta=KEY=VALUE (repeatable), all bounded
                      &rerank=N     two stages: the top max(N, k) re-scored on their stored frames
    POST /search/image?k=10         search by an example image: the raw image file as the body
                                    (Content-Type image/*, at most max_image_bytes; 413 beyond)
    GET /videos/{id}                one indexed video's metadata
    GET /videos/{id}/thumbnail?t=S  JPEG of the frame on screen at S seconds (LRU-cached)
    GET /videos/{id}/stream         the file itself, with HTTP range requests (seeking)
    GET /health                     liveness, model identity, request limits

Security model. URLs carry catalog ids, never paths: a file is served only when the index says
it is an indexed video (``VideoIndex.get_video`` / ``video_path``) and the file on disk is still
the one the catalog indexed (:func:`~vidclip.serve.media.open_indexed_file`: same size and
mtime, a regular file, and inside the library not swapped for a symbolic link that leads out of
it); anything else -- unknown ids, failed or deleted videos, changed files, ids that are not
plain decimal numbers such as ``..%2f..%2fetc%2fpasswd`` -- is a 404 whose reason names no path.
Membership in the catalog, not a path prefix, decides which ids exist, because an index may
legitimately hold videos from several library folders or from CSV lists of absolute paths.
Every input is bounded (422 with a message): query length, ``k``, ``rerank``, the thumbnail
time (0 up to the video's duration), ids (at most 18 digits) and ``Range`` numbers (at most 19
digits); an uploaded image's size in bytes (413) and pixels (the decoding pixel limit, checked
from the header before any pixel is decoded; 422), and its type (an image, 415 / 422).
The upload is the raw request body rather than a multipart form: FastAPI's forms need the
python-multipart package, which vidclip does not depend on; a browser ``fetch`` sends a file
as the body just as easily. No
response shows an absolute path: names are relative to the library (non-UTF-8 bytes escaped,
:func:`vidclip.core.errors.display_path`) and ``/health`` shows only the last part of any path in
the model identity. Files are only ever opened for reading; nothing under the library folder is
written. ``vidclip serve`` binds to 127.0.0.1 unless told otherwise, and ``allowed_hosts``
rejects requests whose ``Host`` header names another site, which stops DNS-rebinding pages
from reading a local library through the user's browser. The page sends a strict
Content-Security-Policy (same origin only, no inline script) and builds the DOM with
``textContent``, so file names cannot inject markup.

Concurrency. Handlers are plain functions, so FastAPI runs them in its worker threads: search,
catalog look-ups and thumbnail decoding never block the event loop, and byte streams are read in
worker threads too. VideoIndex is safe to use from several threads (it holds its own lock).
Image searches run in worker threads too, at most ``max_image_decodes`` at once (a capacity
limiter: the others wait without holding a thread), because a decode briefly holds the whole
picture (100 MB at 8K); the index decodes it straight to near the model's input size
(``load_query_image(min_side=...)``), and the freed memory is handed back to the system
afterwards (:func:`~vidclip.serve.media.release_freed_memory`), so a burst of uploads leaves the
server's RSS where it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from vidclip import __version__
from vidclip.core.errors import ConfigError, VidclipError, display_path
from vidclip.serve import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_DECODES,
    DEFAULT_MAX_K,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_MAX_RERANK,
)
from vidclip.serve.media import (
    FileStamp,
    IndexedFile,
    NotServable,
    RangeNotSatisfiable,
    Thumbnailer,
    TimeOutOfRange,
    content_type_for,
    open_indexed_file,
    parse_range,
    release_freed_memory,
)

log = logging.getLogger("vidclip.serve")

MAX_FILTER_CHARS = 500  # a path glob, a date or one meta KEY=VALUE
MAX_META_FILTERS = 16
MAX_DURATION_S = 1e7  # duration filter bounds, seconds (~116 days)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STREAM_CHUNK = 256 * 1024
# A catalog id in a URL: plain decimal digits only, so nothing path-like can reach a look-up.
_ID_RE = re.compile(r"[0-9]{1,18}")
# Catalog fields /videos/{id} shows; everything else (absolute paths, vectors, shards) stays inside.
PUBLIC_FIELDS = ("duration", "fps", "width", "height", "codec", "num_frames", "size", "status",
                 "indexed_at", "metadata", "windows")

# The page's own policy: everything from this origin, no inline script, no other hosts.
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'; form-action 'self'")


def _not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=what)


def _host_name(host_header: str) -> str:
    """The host part of a ``Host`` header: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _uses_random_weights(identity: Any) -> bool:
    """Whether an index identity (possibly nested dicts) records randomly initialised weights."""
    if isinstance(identity, dict):
        if identity.get("random_weights") is True:
            return True
        return any(_uses_random_weights(v) for v in identity.values())
    return False


# An absolute path inside a string (POSIX, ~, or a Windows drive), but not the '//' of a URL.
_ABS_PATH_RE = re.compile(r"""(?:^|(?<=[\s=('"\[,]))(?:~?/(?!/)|[A-Za-z]:[\\/])[^\s'")\],]*""")


def public_identity(identity: Any) -> Any:
    """``identity`` (nested dicts/lists) with every absolute path cut to its last part.

    ``/home/me/models/vit-b-32.pt`` -> ``vit-b-32.pt``: what a client may see in ``/health``
    (the weights' digest already tells checkpoints apart; where they live is this machine's
    business). Hub ids (``hf:openai/clip-vit-base-patch32``) and URLs are left alone.
    """
    if isinstance(identity, dict):
        return {k: public_identity(v) for k, v in identity.items()}
    if isinstance(identity, (list, tuple)):
        return [public_identity(v) for v in identity]
    if isinstance(identity, str):
        return _ABS_PATH_RE.sub(lambda m: display_path(re.split(r"[\\/]", m.group(0).rstrip("/\\"))[-1] or "/"),
                                identity)
    return identity


def _fmt_t(t: float) -> str:
    return f"{max(0.0, float(t)):.3f}".rstrip("0").rstrip(".") or "0"


def create_app(index, *, max_query_chars: int = DEFAULT_MAX_QUERY_CHARS, max_k: int = DEFAULT_MAX_K,
               max_rerank: int = DEFAULT_MAX_RERANK, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
               max_image_decodes: int = DEFAULT_MAX_IMAGE_DECODES, thumbnail_cache_size: int = 256,
               thumbnail_width: int = 320,
               allowed_hosts: Iterable[str] | None = None, open_video=None) -> FastAPI:
    """A FastAPI app serving search, metadata, thumbnails and streams of ``index``'s videos.

    ``index`` is a :class:`~vidclip.index.search.VideoIndex` (anything with its ``search``,
    ``get_video``, ``video_path``, ``identity`` and ``library_root``). ``max_query_chars`` and
    ``max_k`` bound ``/search`` (422 beyond them), as ``max_rerank`` bounds its ``rerank``;
    ``max_image_bytes`` bounds a ``/search/image`` body (413) and ``max_image_decodes`` how many image
    searches decode and encode at once (the rest wait their turn). ``allowed_hosts``, when given, is the set of
    host names the ``Host`` header may carry (others get 400); ``vidclip serve`` passes the
    loopback names when bound to 127.0.0.1. ``open_video`` overrides the thumbnail decoder
    (default :func:`vidclip.video.decode.open_video`).
    """
    if max_query_chars < 1 or max_k < 1 or max_image_bytes < 1 or max_image_decodes < 1 or max_rerank < 0:
        raise VidclipError(f"create_app: max_query_chars ({max_query_chars}), max_k ({max_k}), max_image_bytes "
                           f"({max_image_bytes}) and max_image_decodes ({max_image_decodes}) must be >= 1, "
                           f"max_rerank ({max_rerank}) >= 0")
    library_root = Path(os.path.abspath(index.library_root))
    thumbs = Thumbnailer(max_width=thumbnail_width, max_height=thumbnail_width * 3 // 4,
                         cache_size=thumbnail_cache_size, open_video=open_video)
    hosts = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}
    random_weights = _uses_random_weights(index.identity)
    # Not anyio's default thread limiter: image searches past this many wait in the event loop,
    # holding no worker thread, so a burst of uploads neither piles up decoded pictures nor starves
    # text search and thumbnails of threads.
    image_slots = anyio.CapacityLimiter(max_image_decodes)

    app = FastAPI(
        title="vidclip",
        version=__version__,
        description="Text-to-video search over a local video library indexed with a frozen CLIP. "
                    "URLs name videos by catalog id; only indexed files are ever served.",
    )
    app.state.index = index
    app.state.thumbnailer = thumbs
    app.state.random_weights = random_weights

    app.add_middleware(_GuardMiddleware, hosts=hosts)

    # ------------------------------------------------------------------ helpers

    def display_name(path: str | os.PathLike) -> str:
        """A path relative to the library (what the user recognises), never an absolute path;
        one printable line, non-UTF-8 bytes as ``\\xNN`` (the file itself is found by id)."""
        p = Path(os.path.abspath(library_root / os.fsdecode(path)))
        try:
            return display_path(p.relative_to(library_root).as_posix())
        except ValueError:
            return display_path(p.name)

    def resolve(video_id: str) -> tuple[int, dict, Path]:
        """Catalog row and catalog path of an indexed video, or 404 (never a path from the URL)."""
        if not _ID_RE.fullmatch(video_id):
            raise _not_found("no such video")
        vid = int(video_id)
        row = index.get_video(vid)
        path = index.video_path(vid) if row is not None else None
        # get_video answers only for indexed videos; the status check is belt and braces
        # against an index that returns failed/deleted rows too.
        if row is None or path is None or row.get("status", "indexed") != "indexed":
            raise _not_found(f"video {vid} is not an indexed video")
        # The catalog is the authority on what may be served: it may legitimately list files
        # outside library_root (other libraries, CSV lists of absolute paths), so there is no
        # prefix check here; what matters is that the path came from the catalog, not the URL.
        full = Path(os.path.abspath(library_root / os.fsdecode(path)))
        return vid, row, full

    def open_checked(video_id: str) -> tuple[int, dict, Path, IndexedFile]:
        """:func:`resolve`, then open the file only if it is still the one the catalog indexed."""
        vid, row, full = resolve(video_id)
        roots = tuple(str(r) for r in (library_root, row.get("root")) if r)
        try:
            opened = open_indexed_file(full, size=row.get("size"), mtime_ns=row.get("mtime_ns"), roots=roots)
        except NotServable as e:
            raise _not_found(f"video {vid}: {e.reason}") from None
        return vid, row, full, opened

    def urls(vid: int, t: float | None = None) -> dict[str, str]:
        thumb = f"/videos/{vid}/thumbnail" + ("" if t is None else f"?t={_fmt_t(t)}")
        return {"url": f"/videos/{vid}", "stream_url": f"/videos/{vid}/stream", "thumbnail_url": thumb}

    def public_row(vid: int, row: dict, full: Path) -> dict:
        """The catalog row fields a client may see: no absolute paths, vectors or shard names."""
        out = {k: row[k] for k in PUBLIC_FIELDS if row.get(k) is not None}
        meta = out.get("metadata")
        if isinstance(meta, str):  # the catalog stores it as JSON text
            try:
                out["metadata"] = json.loads(meta)
            except ValueError:
                out.pop("metadata")
        out = jsonable_encoder(out)
        out.update(id=vid, name=display_name(row.get("path") or full), content_type=content_type_for(full),
                   **urls(vid))
        return out

    # ------------------------------------------------------------------ page and health

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", summary="Liveness, model identity and request limits")
    def health() -> dict:
        return {
            "status": "ok",
            "version": __version__,
            "identity": public_identity(jsonable_encoder(index.identity)),
            "random_weights": random_weights,
            "limits": {"max_query_chars": max_query_chars, "max_k": max_k, "max_rerank": max_rerank,
                       "max_image_bytes": max_image_bytes},
        }

    # ------------------------------------------------------------------ search

    # The options GET /search and POST /search/image share, defined once; each call is a fresh Query
    # (a parameter declaration is not shared between endpoints).
    def k_option():
        return Query(10, ge=1, le=max_k, description=f"number of hits, 1..{max_k}")

    def segments_option():
        return Query(False, description="rank moments (time windows) instead of whole videos")

    def rerank_option():
        return Query(0, ge=0, le=max_rerank, description=f"two stages: re-score the top max(rerank, k) hits on "
                                                         f"their stored frames, 0..{max_rerank} (0 = off)")

    def filter_options(
        path: str | None = Query(None, min_length=1, max_length=MAX_FILTER_CHARS,
                                 description="glob over the library-relative or absolute path, e.g. 'news/*'"),
        min_duration: float | None = Query(None, ge=0, le=MAX_DURATION_S, description="videos at least this many seconds long"),
        max_duration: float | None = Query(None, ge=0, le=MAX_DURATION_S, description="videos at most this many seconds long"),
        modified_after: str | None = Query(None, min_length=1, max_length=40,
                                           description="file modified at or after this date (2024-05-01 or 2024-05-01T14:30, local time)"),
        modified_before: str | None = Query(None, min_length=1, max_length=40, description="file modified before this date"),
        meta: list[str] | None = Query(None, description=f"KEY=VALUE the video's metadata holds; repeatable "
                                                          f"(at most {MAX_META_FILTERS}, all must hold)"),
    ) -> dict:
        """The filters given, checked for size here (their meaning by the index: a ConfigError is a 422)."""
        if meta is not None:
            problem = (f"at most {MAX_META_FILTERS} meta filters" if len(meta) > MAX_META_FILTERS else
                       next((f"meta {m[:40]!r}: not KEY=VALUE of at most {MAX_FILTER_CHARS} characters"
                             for m in meta if "=" not in m or not 0 < len(m) <= MAX_FILTER_CHARS), None))
            if problem:
                raise HTTPException(status_code=422, detail=[{"loc": ["query", "meta"], "type": "value_error",
                                                              "msg": problem}])
        given = {"path": path, "min_duration": min_duration, "max_duration": max_duration,
                 "modified_after": modified_after, "modified_before": modified_before, "meta": meta}
        return {name: value for name, value in given.items() if value is not None}

    def run_search(call, *args, **kwargs) -> list:
        """``call(*args, **kwargs)``; a filter value the index refuses (a bad date, a glob with a NUL)
        is a 422 naming it (the message names no path)."""
        try:
            return call(*args, **kwargs)
        except ConfigError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None

    @app.get("/search", summary="Rank indexed videos (or moments) for a text query")
    def search(
        # Query(...) as a default, not Annotated: with postponed annotations FastAPI could not
        # resolve an Annotated type that refers to this closure's limits.
        q: str = Query(..., min_length=1, max_length=max_query_chars,
                       description=f"the query text, 1..{max_query_chars} characters"),
        k: int = k_option(),
        segments: bool = segments_option(),
        rerank: int = rerank_option(),
        mode: str | None = Query(None, pattern="^(visual|text|hybrid)$",
                                 description="visual (CLIP), text (names, subtitles, metadata) or hybrid (both "
                                             "fused); default: hybrid when the index holds words, else visual"),
        filters: dict = Depends(filter_options),
    ) -> dict:
        """Hits best first. Each has ``score``, the matched span ``start``..``end`` (seconds),
        ``moment`` (the time its thumbnail shows), ``thumbnail_url`` and ``stream_url``; reranked
        hits also ``frame_time`` (their best frame, seconds; the moment) and ``frame_score``; in
        text and hybrid modes ``match`` says why it matched (visual score and rank; the matched
        words, where: name, subtitle cue with its span, metadata key). Filters restrict the
        search itself, so ``k`` hits come back when ``k`` videos match."""
        text = q.strip()
        if not text:
            raise HTTPException(status_code=422, detail=[{
                "loc": ["query", "q"], "type": "value_error", "msg": "q must contain non-blank text"}])
        t0 = time.perf_counter()
        options = {**_search_options(segments, rerank), **filters, **({"mode": mode} if mode else {})}
        hits = run_search(index.search, text, k, **options)
        took_ms = (time.perf_counter() - t0) * 1e3
        return {"query": text, "k": k, "segments": segments, "rerank": rerank, "took_ms": round(took_ms, 2),
                **({"mode": mode} if mode else {}), **({"filters": filters} if filters else {}),
                "hits": [hit_json(hit) for hit in hits]}

    def _search_options(segments: bool, rerank: int) -> dict:
        # rerank only when asked: an index object without two-stage search still serves plain search
        return {"segments": segments, **({"rerank": rerank} if rerank else {})}

    @app.post("/search/image", summary="Rank indexed videos (or moments) for an example image",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def search_image(
        request: Request,
        k: int = k_option(),
        segments: bool = segments_option(),
        rerank: int = rerank_option(),
        filters: dict = Depends(filter_options),
    ) -> dict:
        """The request body is the image file itself (``Content-Type: image/jpeg``, ``image/png``, ...;
        at most ``max_image_bytes``). Hits as ``GET /search``."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctype.startswith("image/"):
            raise HTTPException(status_code=415, detail=f"send the image file itself as the body with an image/* "
                                                        f"Content-Type, not {ctype or 'none'!r}")
        too_big = f"the image is larger than {max_image_bytes} bytes"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and len(declared) <= 19 and int(declared) > max_image_bytes:
            raise HTTPException(status_code=413, detail=too_big)
        body = bytearray()
        async for chunk in request.stream():  # counted as it arrives: a lying Content-Length gains nothing
            body += chunk
            if len(body) > max_image_bytes:
                raise HTTPException(status_code=413, detail=too_big)
        if not body:
            raise HTTPException(status_code=422, detail="the request body is empty: send the image file as the body")
        t0 = time.perf_counter()

        def run() -> list:
            try:
                return index.search_image(bytes(body), k, **_search_options(segments, rerank), **filters)
            finally:
                release_freed_memory()  # the decoded picture's blocks, back from this thread's arena

        try:
            hits = await anyio.to_thread.run_sync(run, limiter=image_slots)
        except ConfigError as e:  # not an image, or over the pixel limit; the message names no path
            raise HTTPException(status_code=422, detail=str(e)) from None
        took_ms = (time.perf_counter() - t0) * 1e3
        return {"query": None, "image": {"bytes": len(body), "content_type": ctype}, "k": k, "segments": segments,
                "rerank": rerank, "took_ms": round(took_ms, 2), **({"filters": filters} if filters else {}),
                "hits": [hit_json(hit) for hit in hits]}

    def hit_json(hit) -> dict:
        """One search hit as the API shows it (used by every route that returns hits)."""
        d = jsonable_encoder({k: v for k, v in hit.to_dict().items() if k != "path"})
        start = max(0.0, float(hit.start))
        end = max(start, float(hit.end))
        # The thumbnail shows the best frame of a reranked hit; otherwise the middle of the
        # matched span: for a moment hit the middle of the best window, for a video hit the
        # middle of its best window.
        frame_time = getattr(hit, "frame_time", None)
        moment = float(frame_time) if frame_time is not None else float(getattr(hit, "moment", (start + end) / 2))
        d.update(video_id=int(hit.video_id), name=display_name(hit.path), start=start, end=end,
                 moment=moment, content_type=content_type_for(hit.path), **urls(int(hit.video_id), moment))
        if frame_time is not None:
            d["frame_time"] = float(frame_time)
        return d

    app.state.hit_json = hit_json  # for routes added next to /search (e.g. reranked search)

    # ------------------------------------------------------------------ videos

    @app.get("/videos/{video_id}", summary="Metadata of one indexed video")
    def video(video_id: str) -> dict:
        vid, row, full, opened = open_checked(video_id)
        opened.close()
        return public_row(vid, row, full)

    @app.get("/videos/{video_id}/thumbnail", summary="JPEG of the frame shown at time t",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(video_id: str,
                  t: float = Query(0.0, ge=0, le=1e7,
                                   description="seconds, 0..the video's duration; the frame on screen at t"),
                  ) -> Response:
        vid, row, _full, opened = open_checked(video_id)
        opened.close()  # decoders open by path: the verified, symlink-free one
        duration = row.get("duration")
        try:
            th = thumbs.render(opened.real_path, t, duration=float(duration) if duration else None)
        except TimeOutOfRange as e:
            raise HTTPException(status_code=422, detail=[{
                "loc": ["query", "t"], "type": "value_error", "msg": str(e), "input": t}]) from None
        except (VidclipError, OSError, ValueError) as e:
            log.warning("thumbnail of video %d at %.3f s failed: %s", vid, t, e)
            raise HTTPException(status_code=500, detail=f"video {vid}: could not decode a frame at {t:g} s") from None
        return Response(th.jpeg, media_type="image/jpeg", headers={
            "Cache-Control": "private, max-age=3600",
            "X-Frame-Index": str(th.frame_index),
            "X-Frame-Time": f"{th.time:.6f}",
        })

    def stream(video_id: str, request: Request) -> Response:
        """The file, whole (200) or the one byte range asked for (206 with Content-Range).

        A malformed or unsatisfiable ``Range`` is 416 with ``Content-Range: bytes */SIZE``;
        ``If-Range`` naming an older version of the file gets the whole file.
        """
        vid, _row, full, opened = open_checked(video_id)
        f = opened.file  # closed by the response body generator
        try:
            st = opened.stat
            stamp = FileStamp(str(full), st.st_size, st.st_mtime_ns)
            headers = {"Accept-Ranges": "bytes", "ETag": stamp.etag, "Last-Modified": stamp.last_modified,
                       "Cache-Control": "no-cache",
                       "Content-Disposition": f"inline; filename*=UTF-8''{quote(display_path(full.name))}"}
            range_header = request.headers.get("range")
            if not stamp.matches_if_range(request.headers.get("if-range")):
                range_header = None  # the client's copy is stale: send the whole new file
            try:
                br = parse_range(range_header, stamp.size)
            except RangeNotSatisfiable as e:
                f.close()
                return JSONResponse({"detail": e.reason}, status_code=416,
                                    headers={**headers, "Content-Range": f"bytes */{stamp.size}"})
            start, length, status = (0, stamp.size, 200) if br is None else (br.start, br.length, 206)
            if br is not None:
                headers["Content-Range"] = br.content_range()
            headers["Content-Length"] = str(length)
            media_type = content_type_for(full)
            if request.method == "HEAD":
                f.close()
                return Response(status_code=status, headers=headers, media_type=media_type)
        except BaseException:
            f.close()
            raise
        return StreamingResponse(_read_span(f, start, length), status_code=status, headers=headers,
                                 media_type=media_type)

    stream_path = "/videos/{video_id}/stream"
    app.add_api_route(stream_path, stream, methods=["GET"], response_class=Response,
                      summary="The video file, with HTTP range requests",
                      responses={200: {"description": "the whole file"},
                                 206: {"description": "the requested byte range"},
                                 416: {"description": "malformed or unsatisfiable Range"}})
    # HEAD (size and type without the body) is answered by the same function, kept out of the schema.
    app.add_api_route(stream_path, stream, methods=["HEAD"], response_class=Response, include_in_schema=False)

    return app


class _GuardMiddleware:
    """Plain ASGI middleware (it does not buffer streamed bodies as BaseHTTPMiddleware can).

    Rejects a ``Host`` header outside ``hosts`` (when given) with 400, and adds security
    headers: ``nosniff`` and ``no-referrer`` everywhere, the page's CSP on the page and its assets.
    """

    def __init__(self, app, hosts: set[str] | None):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.hosts is not None:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.hosts:
                response = JSONResponse({"detail": "Host header not allowed"}, status_code=400)
                return await response(scope, receive, send)
        path = scope.get("path", "")
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        if path == "/" or path.startswith("/static/"):
            extra += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": list(message.get("headers", []))
                           + [(k, v) for k, v in extra if k not in present]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _read_span(f, start: int, length: int):
    """Yield ``length`` bytes of open file ``f`` from ``start`` in chunks, then close it.

    Reads run in a worker thread so a slow disk never blocks the event loop; StreamingResponse
    stops iterating (and this closes the file) when the client disconnects mid-stream, which
    browsers do all the time while seeking.
    """
    try:
        await anyio.to_thread.run_sync(f.seek, start)
        remaining = length
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(f.read, min(STREAM_CHUNK, remaining))
            if not chunk:  # the file shrank under us; the short body makes the client retry
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        f.close()


class BackgroundServer:
    """Run an app with uvicorn in a daemon thread on a free port (tests, notebooks).

    ``with BackgroundServer(app) as srv: httpx.get(srv.url + "health")``. The socket is bound
    before the thread starts, so the port is known and nothing races for it.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import socket

        import uvicorn

        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = host, self._sock.getsockname()[1]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}/"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="vidclip-serve", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
