"""Which of a dataset's videos have current frame features in a store: what training and
evaluation both check before reading features (``vidclip train`` prepare step, ``vidclip eval``);
they then encode what :func:`check_features` reports missing with
:func:`vidclip.encode.pipeline.encode_videos` (the layer above this one).

A cached video is reused only when it is still the same file, the same model and the same
sampler produced it:

- model: the store's model identity key must equal the CLIP's (else refused: another folder);
- sampler: the store's sampler must be uniform with the requested frame count (else refused);
- file: each stored video records its file identity (size, mtime_ns, content hash; see
  :mod:`vidclip.features.identity`). A video whose file changed since it was encoded (a dataset
  regenerated at the same path, a replaced file) is *changed*: it is reported missing and, when
  the caller is about to encode, its old features are dropped (a tombstone,
  :meth:`~vidclip.features.store.FeatureWriter.forget`) so that the encode writes it afresh.
  Records written before file identities were stored cannot be checked and count as changed.
  A file whose mtime changed but whose content hash did not (a copied dataset) is current; the
  new mtime is remembered in ``ROOT/sources-confirmed.json`` so later checks do not hash it again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from vidclip.core.errors import ConfigError
from vidclip.core.fileio import atomic_write_text
from vidclip.features.identity import same_file

#: key -> {size, mtime_ns, hash} of files whose content was confirmed equal to the stored
#: record's after their mtime moved (shards are immutable, so this lives beside them).
CONFIRMED_FILE = "sources-confirmed.json"

__all__ = ["FeatureCheck", "check_features", "check_whole_videos", "default_features_dir"]


@dataclass
class FeatureCheck:
    """What :func:`check_features` found.

    ``missing``: (key, path) of the videos without usable features (never encoded, or
    ``changed``): what to encode; ``changed``: keys among them whose stored features came from
    another file than the one there now.
    """

    root: Path
    missing: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def check_whole_videos(datasets) -> None:
    """Refuse segment-level datasets (items with start/end): features are per whole video."""
    for ds in datasets:
        seg = next((v for v in ds.videos if v.start is not None or v.end is not None), None)
        if seg is not None:
            raise ConfigError(
                f"{ds.name}: video {seg.video_id!r} is a segment ({seg.start}-{seg.end} s); training and "
                "evaluation work on whole videos only (cut the segments into their own files)")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-.") or "x"


def default_features_dir(data_root: str | os.PathLike, identity, encode_frames: int = 12,
                         cache: str | os.PathLike = "cache") -> Path:
    """Where features of a dataset are cached when no folder is given:
    ``cache/<dataset folder>-<model>/features`` (``features-<n>f`` for another frame count than 12).

    ``<model>`` is the architecture name (the last part of a path or hub id), followed by the
    pretrained tag when it is a tag other than ``openai``, or by ``random`` for random weights; so
    ``--data data/msrvtt --model ViT-B-32 --pretrained openai`` shares ``cache/msrvtt-vit-b-32``
    with the ``configs/msrvtt_*.yaml`` runs. Folders that still collide hold another model's
    features, which :func:`check_features` refuses with a message naming the folder.
    """
    model = _slug(Path(str(identity.name).rstrip("/\\")).name)
    tag = identity.pretrained
    if identity.random_weights:
        model += "-random"
    elif tag and tag != "openai" and not any(c in tag for c in "/\\") and not Path(tag).exists():
        model += f"-{_slug(tag)}"
    dataset = _slug(Path(os.path.abspath(data_root)).name)
    leaf = "features" if encode_frames == 12 else f"features-{int(encode_frames)}f"
    return Path(cache) / f"{dataset}-{model}" / leaf


def _known_failures(root: Path) -> set[str]:
    path = root / "failures.jsonl"
    bad: set[str] = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                bad.add(json.loads(line)["key"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return bad


def _read_confirmed(root: Path) -> dict:
    try:
        data = json.loads((root / CONFIRMED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _current(source, confirmed, path: str) -> tuple[bool, dict | None]:
    """(is the file at ``path`` the one ``source`` records?, identity to remember when that took
    a hash because its mtime moved)."""
    if not isinstance(source, dict):
        return False, None
    try:
        st = os.stat(path)
    except OSError:
        return False, None
    if st.st_size != source.get("size"):
        return False, None
    if st.st_mtime_ns == source.get("mtime_ns"):
        return True, None
    now = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": source.get("hash")}
    if confirmed == now:
        return True, None
    return (True, now) if same_file(source, path) else (False, None)


def check_features(root: str | os.PathLike, identity, videos: Iterable[tuple[str, str]], *,
                   encode_frames: int, for_encoding: bool = True,
                   elsewhere: str = "use another feature folder") -> FeatureCheck:
    """Check the feature store at ``root`` (it may not exist yet) for ``videos``.

    Args:
        root: the store folder.
        identity: the ModelIdentity of the CLIP whose features are wanted.
        videos: (key, path) pairs; a repeated key keeps its first path.
        encode_frames: frames per video of the uniform sampler the store must hold.
        for_encoding: the caller encodes ``missing`` next (into ``root``, with that sampler):
            the changed videos' old features are dropped first, so the encode writes them
            afresh. False only reports; videos listed in the store's ``failures.jsonl`` are then
            not counted as missing (they failed before and would fail again).
        elsewhere: the hint ending the refusal messages (how to point at another folder).

    Raises :class:`ConfigError` when the store holds another model's features, or features
    sampled otherwise.
    """
    from vidclip.features.store import STORE_FILE, FeatureStore, FeatureWriter
    from vidclip.models.clip.load import ModelIdentity

    root = Path(root)
    items: dict[str, str] = {}
    for key, path in videos:
        items.setdefault(key, str(path))
    out = FeatureCheck(root)
    if not (root / STORE_FILE).is_file():
        out.missing = list(items.items())
        return out
    store = FeatureStore(root)
    theirs = ModelIdentity.from_dict(store.model).key()
    if theirs != identity.key():
        raise ConfigError(
            f"{root}: features were encoded with {store.model.get('name')} ({theirs}), not with "
            f"{identity.name} ({identity.key()}); {elsewhere}")
    sampled = (store.sampler.get("name"), store.sampler.get("num_frames"))
    if store.sampler and sampled != ("uniform", encode_frames):
        raise ConfigError(
            f"{root}: features were sampled with {sampled[0]} {sampled[1]} frames, not uniform "
            f"{encode_frames}; {elsewhere}")
    confirmed = _read_confirmed(root)
    remember: dict[str, dict] = {}
    for k, p in items.items():
        if k in store:
            current, now = _current(store.record(k).get("source"), confirmed.get(k), p)
            if not current:
                out.changed.append(k)
            elif now is not None:
                remember[k] = now
    changed = set(out.changed)
    if remember or changed & set(confirmed):
        confirmed = {k: v for k, v in {**confirmed, **remember}.items() if k not in changed}
        try:
            atomic_write_text(root / CONFIRMED_FILE, json.dumps(confirmed, sort_keys=True), durable=False)
        except OSError:  # a read-only store: it is only a cache, hash again next time
            pass
    out.missing = [(k, p) for k, p in items.items() if k not in store or k in changed]
    if not for_encoding:
        bad = _known_failures(root)
        out.missing = [(k, p) for k, p in out.missing if k not in bad or k in changed]
    elif out.changed:
        with FeatureWriter(root, store.model, store.sampler) as writer:
            writer.forget(out.changed)
    return out
