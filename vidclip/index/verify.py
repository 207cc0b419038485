"""``vidclip index --verify DIR``: check every part of an index against the catalog and repair what
can be rebuilt from what is stored.

Checked: first what ``vidclip index`` itself refuses to work with (:func:`~.directory.find_damage`,
the same function: a catalog that is empty, unreadable or lost while frames are stored, a
``features/store.json`` that is missing, corrupt or names another model, directories where files
belong); then every indexed row has a vector of the model's width and its frames in a readable
shard with enough rows; each faiss file loads, is stamped with the catalog's generation and holds
as many vectors as the catalog; no temp files or orphan shards of a killed run remain. Repaired
(under the writer's lock): ``store.json`` is written again from the catalog's model and sampler;
faiss files are rebuilt from the vectors in the catalog; videos whose stored frames are lost are
marked so that the next ``vidclip index`` of their library re-encodes exactly them; leftovers are
deleted. Not repairable here (reported with what to do): a catalog that is lost or does not open
(re-index), a path that is a directory where a file belongs.
"""

from __future__ import annotations

import os

from vidclip.core.errors import VidclipError, display_path
from vidclip.index.directory import CATALOG_FILE, KINDS, IndexDir
from vidclip.index.vectors import VectorIndex


def verify_index(index_dir: str | os.PathLike) -> dict:
    """Check and repair the index at ``index_dir``.

    Returns {"index", "ok" (nothing left wrong after the repairs), "findings": [{"file", "problem",
    "repair"}], "counts"}; "repair" is what was done, or None when nothing could be (then the
    finding has an "advice": what to do); "counts" is None when the catalog cannot be used.
    """
    index_dir = IndexDir(index_dir)
    shown = display_path(index_dir.path)
    if not index_dir.path.is_dir() or not (index_dir.is_index() or index_dir.find_damage()):
        raise VidclipError(f"{shown}: not a vidclip index (no {CATALOG_FILE})")
    findings: list[dict] = []

    def found(path, problem: str, repair: str | None, advice: str | None = None) -> None:
        findings.append({"file": display_path(path), "problem": problem, "repair": repair}
                        | ({"advice": advice} if repair is None and advice else {}))

    with index_dir.lock():
        for tmp in index_dir.remove_stale_temps():
            found(tmp, "temp file of an interrupted faiss save", "deleted")
        damage = index_dir.find_damage()  # the catalog itself: checked before opening it for writing
        if damage:
            for d in damage:
                found(d.path, d.problem, None, d.advice)
            return {"index": shown, "ok": False, "findings": findings, "counts": None}
        with index_dir.open_catalog() as catalog:
            model = catalog.get_meta("model")
            if model is None:
                return {"index": shown, "ok": True, "findings": findings,
                        "counts": catalog.counts(), "note": "the index holds no videos yet"}
            for d in index_dir.find_damage(catalog):  # what `vidclip index` refuses: repaired where it can be
                if d.repair is not None:
                    found(d.path, d.problem, d.repair())
                else:
                    found(d.path, d.problem, None, d.advice)
            dim = int(model["embed_dim"])
            for lost in index_dir.mark_lost_frames(catalog, dim):
                found(lost["path"], lost["reason"], "marked lost: the next `vidclip index` of its library re-encodes it")
            bad_vectors = [(r[0], os.fsdecode(r[1])) for r in catalog.conn.execute(
                "SELECT id, abs_path FROM videos WHERE status = 'indexed' AND (vector IS NULL OR length(vector) != ?)",
                (4 * dim,))]
            if bad_vectors:
                with catalog.transaction() as cur:
                    catalog.mark_lost(cur, [i for i, _ in bad_vectors], "stored video vector missing or of the wrong "
                                                                        "width; re-index to encode it again")
                    catalog.bump_generation(cur)
                for _, path in bad_vectors:
                    found(path, f"stored video vector missing or not {dim}-d",
                          "marked lost: the next `vidclip index` of its library re-encodes it")
            orphans = index_dir.remove_orphan_shards(catalog)
            if orphans:
                found(index_dir.features, f"{orphans} shard(s) no catalog row references", "deleted")
            for kind in KINDS:
                path = index_dir.faiss_path(kind)
                stored = catalog.count_vectors(kind)  # a COUNT(*): the vectors themselves stay on disk
                if path.is_dir():
                    continue  # reported by find_damage
                problem = None
                try:
                    saved = VectorIndex.load(path)
                    if saved.metadata.get("generation") != catalog.generation:
                        problem = (f"stale: built at catalog generation {saved.metadata.get('generation')}, "
                                   f"the catalog is at {catalog.generation}")
                    elif saved.dim != dim or saved.ntotal != stored:
                        problem = f"holds {saved.ntotal} {saved.dim}-d vectors, the catalog {stored} {dim}-d"
                except VidclipError as e:
                    problem = str(e).removeprefix(f"{path}: ")
                if problem is not None:
                    if path.exists():
                        path.unlink()  # derived data: rebuilt below from the catalog's vectors
                    index_dir.sync_faiss(catalog, kind, dim, save=True)
                    found(path, problem, f"rebuilt from the {stored} vectors stored in the catalog")
            counts = catalog.counts()
    ok = all(f["repair"] is not None for f in findings)
    return {"index": shown, "ok": ok, "findings": findings, "counts": counts}
