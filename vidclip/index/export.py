"""``vidclip export INDEX OUT``: an index's embeddings as a file other tools read.

One row per item of a level:

* ``video``: one per indexed video, its pooled vector (the catalog's, which the faiss index holds);
* ``segment``: one per time window (``--segments`` search's vectors);
* ``frame``: one per stored frame embedding (the feature store's fp16, widened to float32).

Columns: ``id`` (the video / segment id of the catalog; for frames the row number), ``video_id``,
``path`` (absolute), ``start`` / ``end`` (seconds; a frame's time twice; a video 0 .. duration),
``frame_index`` (frame level only), ``text`` (the subtitle cues overlapping the span, in time
order, joined by newlines; empty when none or when the index has no text channel) and
``embedding``, a ``fixed_size_list<float32>[D]``.

Formats: ``parquet`` (pyarrow; the model identity and export settings in the file's key-value
metadata under ``vidclip``, a JSON object; DuckDB, pandas and LanceDB read it as is) or ``npy``:
a folder with ``embeddings.npy`` (float32 [N, D], row i = line i of ``rows.jsonl``), ``rows.jsonl``
and ``meta.json`` (the same identity object). Both are written next to OUT and moved into place,
so a killed export leaves the old OUT or the new one. The whole export reads one catalog snapshot
(one read transaction), so a concurrent ``vidclip index`` does not tear it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from vidclip import __version__
from vidclip.core.errors import BackendUnavailableError, ConfigError, display_path

if TYPE_CHECKING:  # the verb's module is imported by every `vidclip` run: numpy, faiss load when it runs
    import numpy as np

    from vidclip.index.catalog import Catalog
    from vidclip.index.directory import IndexDir

LEVELS = ("video", "segment", "frame")
FORMATS = ("parquet", "npy")
BATCH_ROWS = 8192  # rows read, converted and written at a time: bounds memory
NPY_FILES = ("embeddings.npy", "rows.jsonl", "meta.json")
META_KEY = b"vidclip"  # parquet key-value metadata: the identity object (JSON)

EXPORT_EPILOG = """\
examples:
  vidclip export ~/vidx videos.parquet                       # one row per video
  vidclip export ~/vidx segments.parquet --level segment     # one row per time window
  vidclip export ~/vidx frames --level frame --format npy    # frames/embeddings.npy + rows.jsonl + meta.json

Read it back: pandas.read_parquet("videos.parquet"), duckdb "SELECT * FROM 'videos.parquet'",
lancedb db.create_table("videos", pyarrow.parquet.read_table("videos.parquet")).
"""


# ----------------------------------------------------------------------------- the verb


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="write an index's embeddings to Parquet (or .npy + JSON Lines) for other tools",
        description="Write one row per video, time window or frame of an index: id, path, start, end, the "
                    "subtitle text of the span and the embedding (fixed-size list of float32), with the model "
                    "identity in the file's metadata.",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", metavar="INDEX", help="index directory made by `vidclip index`")
    p.add_argument("out", metavar="OUT", help="the file to write (parquet), or the folder (npy)")
    p.add_argument("--level", choices=LEVELS, default="video", help="rows: videos, segments or frames (default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="parquet", dest="fmt",
                   help="parquet (one file) or npy (a folder: embeddings.npy, rows.jsonl, meta.json) (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(ns: argparse.Namespace) -> int:
    index_dir = check_export_args(ns.index, ns.out, ns.level, ns.fmt)
    summary = export_index(index_dir, ns.out, level=ns.level, fmt=ns.fmt)
    if ns.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['rows']} {ns.level} rows of {summary['dim']}-d embeddings to {display_path(summary['out'])}")
    return 0


def check_export_args(index: str | os.PathLike, out: str | os.PathLike, level: str = "video",
                      fmt: str = "parquet") -> IndexDir:
    """The checks made before anything heavy loads; returns the index folder. One ConfigError /
    VidclipError line naming what is wrong (INDEX, OUT, --level, --format)."""
    from vidclip.index.directory import IndexDir

    if level not in LEVELS:
        raise ConfigError(f"--level {level!r}: must be one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    index_dir = IndexDir.require(index, option="INDEX")
    out = Path(out).expanduser()
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"OUT {display_path(out)}: its folder {display_path(parent)} does not exist")
    if out.resolve() == index_dir.path or index_dir.path in out.resolve().parents:
        raise ConfigError(f"OUT {display_path(out)}: is inside the index folder; write the export elsewhere")
    if fmt == "parquet" and os.path.lexists(out) and not out.is_file():
        raise ConfigError(f"OUT {display_path(out)}: is a folder; give a file name such as videos.parquet "
                          "(or --format npy to write a folder)")
    if fmt == "npy" and os.path.lexists(out):
        if not out.is_dir():
            raise ConfigError(f"OUT {display_path(out)}: exists and is not a folder (--format npy writes a folder)")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in NPY_FILES)
        if foreign:
            raise ConfigError(f"OUT {display_path(out)}: holds {foreign[0]!r}, not an earlier export; give a new "
                              "or an export folder")
    return index_dir


# ----------------------------------------------------------------------------- the rows


def export_index(index_dir: IndexDir | str | os.PathLike, out: str | os.PathLike, *, level: str = "video",
                 fmt: str = "parquet") -> dict:
    """Write the ``level`` rows of the index at ``index_dir`` to ``out`` (see the module docstring).
    Returns {"out", "rows", "dim", "level", "format"}."""
    index_dir = check_export_args(os.fspath(index_dir), out, level, fmt)
    out = Path(out).expanduser()
    with index_dir.open_catalog(readonly=True) as catalog:
        catalog.conn.execute("BEGIN")  # one snapshot for the whole export
        try:
            dim = _dim(catalog, index_dir)
            meta = {"level": level, "dim": dim, "vidclip": __version__, "index": str(index_dir.path),
                    **{key: catalog.get_meta(key) for key in ("model", "model_key", "sampler", "temporal")}}
            batches = _batches(catalog, index_dir, level, dim)
            if fmt == "parquet":
                rows = _write_parquet(out, batches, meta, dim, level)
            else:
                rows = _write_npy(out, batches, meta, dim, _count(catalog, level))
        finally:
            catalog.conn.execute("ROLLBACK")
    return {"out": str(out), "rows": rows, "dim": dim, "level": level, "format": fmt}


def _dim(catalog: Catalog, index_dir: IndexDir) -> int:
    row = catalog.conn.execute("SELECT vector FROM videos WHERE status = 'indexed' AND vector IS NOT NULL LIMIT 1").fetchone()
    if row is None:
        raise ConfigError(f"INDEX {display_path(index_dir.path)}: holds no indexed videos to export")
    return len(row[0]) // 4


def _count(catalog: Catalog, level: str) -> int:
    if level == "frame":
        return int(catalog.conn.execute("SELECT COALESCE(SUM(count), 0) FROM videos WHERE status = 'indexed' "
                                        "AND shard IS NOT NULL").fetchone()[0])
    return catalog.count_vectors("videos" if level == "video" else "segments")


def _batches(catalog: Catalog, index_dir: IndexDir, level: str, dim: int) -> Iterator[dict]:
    """Column batches: {"id", "video_id", "path", "start", "end", ["frame_index"], "text", "embedding"}."""
    import numpy as np

    if level == "frame":
        yield from _frame_batches(catalog, index_dir, dim)
        return
    kind = "videos" if level == "video" else "segments"
    for ids, vectors in catalog.iter_vectors(kind, dim, chunk=BATCH_ROWS):
        if level == "video":
            videos = catalog.videos_by_ids(ids.tolist())
            video_ids = ids
            starts = np.zeros(len(ids))
            ends = np.array([_num(videos[i]["duration"]) for i in ids.tolist()])
        else:
            segments = catalog.segments_by_ids(ids.tolist())
            video_ids = np.array([segments[i]["video_id"] for i in ids.tolist()], dtype=np.int64)
            videos = catalog.videos_by_ids(set(video_ids.tolist()))
            starts = np.array([segments[i]["start"] for i in ids.tolist()], dtype=np.float64)
            ends = np.array([segments[i]["end"] for i in ids.tolist()], dtype=np.float64)
        yield {"id": ids, "video_id": video_ids, "path": [videos[v]["abs_path"] for v in video_ids.tolist()],
               "start": starts, "end": ends, "text": _span_texts(catalog, video_ids, starts, ends, whole=level == "video"),
               "embedding": vectors}


def _frame_batches(catalog: Catalog, index_dir: IndexDir, dim: int) -> Iterator[dict]:
    import numpy as np

    rows = catalog.conn.execute("SELECT id, abs_path, shard, offset, count FROM videos WHERE status = 'indexed' "
                                "AND shard IS NOT NULL ORDER BY id").fetchall()
    next_id = 0
    pending: list[dict] = []
    size = 0
    for video_id, abs_path, shard, offset, count in rows:
        emb, frame_index, times = index_dir.open_shard(shard, rows=int(offset) + int(count))
        lo, hi = int(offset), int(offset) + int(count)
        if emb.shape[1] != dim:
            raise ConfigError(f"INDEX {display_path(index_dir.path)}: shard {shard} holds {emb.shape[1]}-d frames, "
                              f"the videos {dim}-d")
        times = np.asarray(times[lo:hi], dtype=np.float64)
        vid = np.full(hi - lo, video_id, dtype=np.int64)
        pending.append({"id": np.arange(next_id, next_id + hi - lo, dtype=np.int64), "video_id": vid,
                        "path": [_path(abs_path)] * (hi - lo), "start": times, "end": times,
                        "frame_index": np.asarray(frame_index[lo:hi], dtype=np.int64),
                        "text": _span_texts(catalog, vid, times, times, whole=False),
                        "embedding": np.asarray(emb[lo:hi], dtype=np.float32)})
        next_id += hi - lo
        size += hi - lo
        if size >= BATCH_ROWS:
            yield _concat(pending)
            pending, size = [], 0
    if pending:
        yield _concat(pending)


def _path(value) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def _concat(parts: list[dict]) -> dict:
    import numpy as np

    return {key: (sum((p[key] for p in parts), []) if key in ("path", "text")
                  else np.concatenate([p[key] for p in parts])) for key in parts[0]}


def _span_texts(catalog: Catalog, video_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, *,
                whole: bool) -> list[str]:
    """The subtitle cues of each row's video overlapping [start, end) (a frame, start == end: the cues
    showing at that time; ``whole``: every cue of the video), in time order, joined by newlines."""
    if not catalog.has_text_tables():
        return [""] * len(video_ids)
    from vidclip.index.textsearch import subtitle_cues

    cues = subtitle_cues(catalog.conn, video_ids.tolist())
    texts = []
    for vid, s, e in zip(video_ids.tolist(), starts.tolist(), ends.tolist()):
        picked = [t for cs, ce, t in cues.get(vid, ())
                  if whole or (ce > s and (cs <= e if s == e else cs < e))]
        texts.append("\n".join(picked))
    return texts


# ----------------------------------------------------------------------------- writers


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BackendUnavailableError("vidclip export --format parquet needs pyarrow: pip install pyarrow "
                                      "(or use --format npy)") from None
    return pa, pq


def _write_parquet(out: Path, batches: Iterator[dict], meta: dict, dim: int, level: str) -> int:
    import numpy as np

    pa, pq = _pyarrow()
    fields = [pa.field("id", pa.int64()), pa.field("video_id", pa.int64()), pa.field("path", pa.string()),
              pa.field("start", pa.float64()), pa.field("end", pa.float64())]
    if level == "frame":
        fields.append(pa.field("frame_index", pa.int64()))
    fields += [pa.field("text", pa.string()), pa.field("embedding", pa.list_(pa.float32(), dim))]
    schema = pa.schema(fields, metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})
    rows = 0
    from vidclip.core.fileio import atomic_path

    with atomic_path(out, durable=True) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                emb = np.ascontiguousarray(batch["embedding"], dtype=np.float32)
                arrays = [pa.array(batch[f.name], type=f.type) for f in fields[:-1]]
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim))
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += len(emb)
    return rows


def _write_npy(out: Path, batches: Iterator[dict], meta: dict, dim: int, n: int) -> int:
    import numpy as np

    from vidclip.core.fileio import fsync_dir

    out = out.resolve()
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()
    try:
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        rows = 0
        with open(tmp / "rows.jsonl", "w", encoding="utf-8") as f:
            for batch in batches:
                c = len(batch["embedding"])
                if rows + c > n:
                    raise ConfigError(f"export: the catalog changed while exporting ({rows + c} rows, counted {n})")
                emb[rows:rows + c] = batch["embedding"]
                cols = [k for k in batch if k != "embedding"]
                values = [batch[k].tolist() if isinstance(batch[k], np.ndarray) else batch[k] for k in cols]
                for row in zip(*values):
                    f.write(json.dumps(dict(zip(cols, row)), ensure_ascii=False) + "\n")
                rows += c
            f.flush()
            os.fsync(f.fileno())
        emb.flush()
        del emb
        if rows != n:
            raise ConfigError(f"export: the catalog changed while exporting ({rows} rows, counted {n})")
        with open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump({**meta, "rows": rows}, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        old = None
        if out.exists():  # an earlier export (check_export_args made sure): swap, then drop it
            old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.old.tmp")
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return rows
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
