"""Dataset readers: MSR-VTT (real mini fixture + synthetic), MSVD, DiDeMo, JSONL, errors, validation split."""

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from vidclip.core.errors import ConfigError, DatasetError
from vidclip.data.datasets import (
    CaptionDataset,
    DatasetWarning,
    VideoItem,
    load_dataset,
    split_validation,
)
from vidclip.synthetic.datasets import SynthConfig, load_synth_meta, make_synthetic_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def write_msrvtt(
    root: Path, videos=("video0", "video1", "video2"), sentences=None, train=("video0", "video1")
):
    """A tiny MSR-VTT layout: json + train list + test csv + empty video files."""
    root.mkdir(parents=True, exist_ok=True)
    if sentences is None:
        sentences = [
            ("video0", "a cat"),
            ("video1", "a dog"),
            ("video0", "a kitten"),
            ("video2", "a bird"),
        ]
    data = {
        "videos": [{"video_id": v, "id": i, "split": "train"} for i, v in enumerate(videos)],
        "sentences": [
            {"caption": c, "video_id": v, "sen_id": i} for i, (v, c) in enumerate(sentences)
        ],
    }
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in train))
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr2,video2,a bird flies\n"
    )
    for v in videos:
        touch(root / "videos" / f"{v}.mp4")
    return root


# ----------------------------------------------------------------------------- MSR-VTT


@pytest.mark.shared
def test_msrvtt_real_mini_fixture():
    mini = SHARED / "msrvtt" / "mini"
    if not mini.is_dir():
        pytest.skip("../shared not present: no real MSR-VTT fixture")
    ds = load_dataset("msrvtt", mini, "test")
    assert ds.video_ids == ["video7020", "video7021", "video7024", "video7025"]
    assert ds.num_captions == 4 and ds.caption_video.tolist() == [0, 1, 2, 3]
    assert ds.captions_of(1) == ["baseball player hits ball"]
    assert ds.captions_of(3) == ["a naked child runs through a field"]
    assert all(v.path.is_file() and v.path.parent == mini / "videos" for v in ds.videos)
    # the captions agree with the json's sentences
    data = json.loads((mini / "MSRVTT_data.json").read_text())
    assert {s["video_id"]: s["caption"] for s in data["sentences"]} == {
        v.video_id: ds.captions_of(i)[0] for i, v in enumerate(ds.videos)
    }


@pytest.mark.shared
def test_msrvtt_official_split_lists():
    root = SHARED / "msrvtt"
    if not (root / "MSRVTT_JSFUSION_test.csv").is_file():
        pytest.skip("../shared not present: no official MSR-VTT split files")
    ds = load_dataset("msrvtt", root, "test", check_files=False)
    assert len(ds) == 1000 and ds.num_captions == 1000  # 1k-A: one caption per video
    assert (
        ds.videos[0].video_id == "video9770" and ds.captions[1] == "a little girl does gymnastics"
    )
    with pytest.raises(
        DatasetError, match=r"1000 of 1000 video files are missing: .*video9770\.mp4"
    ):
        load_dataset("msrvtt", root, "test")
    with pytest.raises(DatasetError, match="MSRVTT_data.json"):  # train needs the captions json
        load_dataset("msrvtt", root, "train9k", check_files=False)


def test_msrvtt_on_synthetic_dataset(tmp_path):
    summary = make_synthetic_dataset(
        tmp_path / "syn",
        SynthConfig(num_videos=10, size=32, num_frames=4, test_fraction=0.4, captions_per_video=3),
        progress=False,
    )
    meta = {v["video_id"]: v for v in load_synth_meta(tmp_path / "syn")["videos"]}
    train = load_dataset("msrvtt", summary["root"], "train")
    test = load_dataset("msrvtt", summary["root"], "test")
    assert (len(train), train.num_captions) == (6, 18) and (len(test), test.num_captions) == (4, 4)
    assert train.split == "train" and test.split == "test"
    for ds in (train, test):
        for i, v in enumerate(ds.videos):
            assert v.path.is_file() and meta[v.video_id]["split"] == ds.split
            n = 3 if ds is train else 1
            assert ds.captions_of(i) == meta[v.video_id]["captions"][:n]
    assert {meta[v]["twin"] for v in test.video_ids} == set(test.video_ids)


def test_msrvtt_train_and_videos_all(tmp_path):
    root = write_msrvtt(tmp_path / "m")
    ds = load_dataset("msrvtt", root, "train9k")
    assert ds.video_ids == ["video0", "video1"]
    assert ds.captions == ["a cat", "a dog", "a kitten"] and ds.caption_video.tolist() == [0, 1, 0]
    assert ds.captions_of(0) == ["a cat", "a kitten"]
    # the other common layout: videos/all/<id>.mp4
    (root / "videos").rename(tmp_path / "tmpv")
    (root / "videos").mkdir()
    (tmp_path / "tmpv").rename(root / "videos" / "all")
    ds = load_dataset("msrvtt", root, "test")
    assert ds.videos[0].path == root / "videos" / "all" / "video2.mp4" and ds.captions == [
        "a bird flies"
    ]


def test_msrvtt_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("msrvtt", tmp_path / "nowhere", "test")
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        load_dataset("youcook", tmp_path, "test")
    root = write_msrvtt(tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        load_dataset("msrvtt", root, "val")
    with pytest.raises(DatasetError, match=r"MSRVTT_train\.7k\.csv: csv file not found"):
        load_dataset("msrvtt", root, "train7k")

    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video,sentence\nret0,msr2,video2,x\n"
    )
    with pytest.raises(
        DatasetError, match=r"JSFUSION_test\.csv: missing column\(s\) \['video_id'\]"
    ):
        load_dataset("msrvtt", root, "test")
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr2,video2,ok\nret1,msr1,video1,\n"
    )
    with pytest.raises(DatasetError, match=r"JSFUSION_test\.csv:3: 'sentence'.*non-empty"):
        load_dataset("msrvtt", root, "test")

    root = write_msrvtt(
        tmp_path / "b", sentences=[("video0", "a"), ("video1", "b"), ("video9", "ghost")]
    )
    with pytest.raises(
        DatasetError,
        match=r"MSRVTT_data\.json: sentences\[2\]: video_id 'video9' is not in 'videos'",
    ):
        load_dataset("msrvtt", root, "train")

    root = write_msrvtt(tmp_path / "c", train=("video0", "video7"))
    with pytest.raises(DatasetError, match=r"MSRVTT_train\.9k\.csv:3: video_id 'video7' is not in"):
        load_dataset("msrvtt", root, "train")

    root = write_msrvtt(tmp_path / "d")
    (root / "MSRVTT_data.json").write_text('{"videos": [}')
    with pytest.raises(DatasetError, match=r"MSRVTT_data\.json:1: invalid JSON"):
        load_dataset("msrvtt", root, "train")

    eight = [f"video{i}" for i in range(8)]
    root = write_msrvtt(
        tmp_path / "e", videos=eight, sentences=[(v, "c") for v in eight], train=eight
    )
    for i in range(1, 8):
        (root / "videos" / f"video{i}.mp4").unlink()
    with pytest.raises(
        DatasetError, match=r"7 of 8 video files are missing: .*video1\.mp4, .*video5\.mp4, \.\.\."
    ):
        load_dataset("msrvtt", root, "train")
    assert len(load_dataset("msrvtt", root, "train", check_files=False)) == 8

    with pytest.raises(ConfigError, match="unexpected keyword"):
        load_dataset("msrvtt", root, "train", strict=True)


def test_msrvtt_video_without_caption_warns(tmp_path):
    root = write_msrvtt(tmp_path, sentences=[("video0", "a cat"), ("video2", "a bird")])
    with pytest.warns(
        DatasetWarning, match=r"1 video\(s\) of msrvtt-train have no caption: \['video1'\]"
    ):
        ds = load_dataset("msrvtt", root, "train")
    assert len(ds) == 2 and ds.captions_of(1) == []  # kept: it is still part of the gallery


# ----------------------------------------------------------------------------- MSVD


def write_msvd(root: Path, captions=None):
    root.mkdir(parents=True, exist_ok=True)
    if captions is None:
        captions = {
            "vidA_1_5": [["a", "man", "sings"], ["someone", "is", "singing"]],
            "vidB_2_9": [["a", "cat", "jumps"]],
            "vidC_0_3": [["a", "car", "drives"], ["cars", "race"], ["racing"]],
        }
    with open(root / "raw-captions.pkl", "wb") as f:
        pickle.dump(captions, f)
    (root / "train_list.txt").write_text("vidA_1_5\nvidB_2_9\n\n")
    (root / "test_list.txt").write_text("vidC_0_3\n")
    touch(root / "videos" / "vidA_1_5.avi")
    touch(root / "videos" / "sub" / "vidB_2_9.mp4")  # any extension, any depth
    touch(root / "videos" / "vidC_0_3.webm")
    return root


def test_msvd(tmp_path):
    root = write_msvd(tmp_path / "msvd")
    train = load_dataset("msvd", root, "train")
    assert train.video_ids == ["vidA_1_5", "vidB_2_9"] and train.name == "msvd-train"
    assert train.captions_of(0) == ["a man sings", "someone is singing"]
    assert train.captions_of(1) == ["a cat jumps"]
    assert train.videos[1].path == root / "videos" / "sub" / "vidB_2_9.mp4"
    test = load_dataset("msvd", root, "test")
    assert test.captions == [
        "a car drives",
        "cars race",
        "racing",
    ] and test.caption_video.tolist() == [0, 0, 0]
    assert test.videos[0].path.suffix == ".webm"


def test_msvd_errors(tmp_path):
    root = write_msvd(tmp_path / "a")
    with pytest.raises(DatasetError, match=r"val_list\.txt: video list not found"):
        load_dataset("msvd", root, "val")
    (root / "videos" / "vidC_0_3.webm").unlink()
    with pytest.raises(DatasetError, match=r"1 of 1 video files are missing: .*vidC_0_3"):
        load_dataset("msvd", root, "test")

    root = write_msvd(tmp_path / "b", captions={"vidA_1_5": [["hi"]]})
    with pytest.warns(DatasetWarning, match=r"have no caption: \['vidB_2_9'\]"):
        load_dataset("msvd", root, "train")

    root = write_msvd(tmp_path / "c", captions={"vidA_1_5": [["hi"]], "vidB_2_9": [["ok"], 7]})
    with pytest.raises(
        DatasetError, match=r"raw-captions\.pkl: \['vidB_2_9'\]\[1\]: caption must be"
    ):
        load_dataset("msvd", root, "train")

    root = write_msvd(tmp_path / "d", captions=[("vidA_1_5", "x")])
    with pytest.raises(DatasetError, match="expected a dict"):
        load_dataset("msvd", root, "train")
    (root / "raw-captions.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"raw-captions\.pkl: cannot unpickle"):
        load_dataset("msvd", root, "train")

    write_msvd(root)
    (root / "train_list.txt").write_text("vidA_1_5\nvidB_2_9\nvidA_1_5\n")
    with pytest.raises(DatasetError, match=r"train_list\.txt:3: duplicate video id 'vidA_1_5'"):
        load_dataset("msvd", root, "train")


# ----------------------------------------------------------------------------- DiDeMo


def write_didemo(root: Path, items=None, listed=("v1.mov", "v2.mp4")):
    root.mkdir(parents=True, exist_ok=True)
    if items is None:
        items = [
            {
                "video": "v1.mov",
                "description": "a man walks in.",
                "times": [[0, 0], [0, 1]],
                "annotation_id": 1,
            },
            {"video": "v2.mp4", "description": "a dog barks", "times": [[2, 3]]},
            {"video": "v1.mov", "description": "he sits down", "times": [[3, 4], [3, 3]]},
        ]
    (root / "train_data.json").write_text(json.dumps(items))
    if listed is not None:
        (root / "train_list.txt").write_text("".join(f"{v}\n" for v in listed))
    touch(root / "videos" / "v1.mp4")  # re-encoded: same stem, other extension
    touch(root / "videos" / "v2.mp4")
    return root


def test_didemo_paragraphs(tmp_path):
    root = write_didemo(tmp_path / "d")
    ds = load_dataset("didemo", root, "train")
    assert ds.video_ids == ["v1.mov", "v2.mp4"]
    # paragraph mode: all descriptions of a video, in json order, joined with a space
    assert ds.captions == ["a man walks in. he sits down", "a dog barks"]
    assert (
        ds.videos[0].path == root / "videos" / "v1.mp4"
        and ds.videos[1].path == root / "videos" / "v2.mp4"
    )
    assert ds.videos[0].start is None and ds.videos[0].end is None  # whole video
    # without a list file, the json's videos in order of first appearance
    (root / "train_list.txt").unlink()
    assert load_dataset("didemo", root, "train").video_ids == ["v1.mov", "v2.mp4"]


def test_didemo_errors(tmp_path):
    root = write_didemo(tmp_path / "a", listed=("v1.mov",))
    with pytest.raises(
        DatasetError, match=r"train_data\.json: \[1\]: video 'v2\.mp4' is not in .*train_list\.txt"
    ):
        load_dataset("didemo", root, "train")
    with pytest.warns(DatasetWarning, match="skipped 1 row"):
        ds = load_dataset("didemo", root, "train", strict=False)
    assert ds.captions == ["a man walks in. he sits down"]

    bad = [{"video": "v1.mov", "description": "x", "times": [[0]]}]
    root = write_didemo(tmp_path / "b", items=bad)
    with pytest.raises(DatasetError, match=r"train_data\.json: \[0\]: 'times' must be"):
        load_dataset("didemo", root, "train")
    root = write_didemo(tmp_path / "c", items=[{"video": "v1.mov", "times": []}])
    with pytest.raises(
        DatasetError, match=r"\[0\] 'description': caption must be a non-empty string"
    ):
        load_dataset("didemo", root, "train")
    root = write_didemo(tmp_path / "d", items={"video": "v1.mov"})
    with pytest.raises(DatasetError, match="expected a JSON list"):
        load_dataset("didemo", root, "train")
    root = write_didemo(tmp_path / "e", listed=("v1.mov", "v2.mp4", "v3.mp4"))
    with pytest.raises(DatasetError, match=r"1 of 3 video files are missing: .*v3\.mp4"):
        load_dataset("didemo", root, "train")
    with pytest.warns(DatasetWarning, match=r"no caption: \['v3\.mp4'\]"):
        assert load_dataset("didemo", root, "train", check_files=False).captions_of(2) == []


# ----------------------------------------------------------------------------- JSONL


def test_jsonl(tmp_path):
    lib = tmp_path / "lib"
    touch(lib / "clips" / "a.mp4")
    touch(lib / "b.mkv")
    other = touch(tmp_path / "elsewhere" / "c.mp4")
    lines = [
        {"video": "clips/a.mp4", "caption": "a red ball"},
        {"video": "b.mkv", "caption": "a kitchen", "start": 1.5, "end": 4},
        {"video": "clips/a.mp4", "caption": "a ball rolls"},
        {"video": "b.mkv", "caption": "someone cooks", "start": 4, "end": 9},
        {"video": str(other), "caption": "far away", "video_id": "c"},
        {"video": "b.mkv", "caption": "a cosy kitchen", "start": 1.5, "end": 4.0},
    ]
    path = lib / "train.jsonl"
    path.write_text(
        "\n".join(json.dumps(x) for x in lines[:3])
        + "\n\n"
        + "\n".join(json.dumps(x) for x in lines[3:])
    )
    for ds in (load_dataset("jsonl", path, "train"), load_dataset("jsonl", lib, "train")):
        assert ds.video_ids == ["clips/a.mp4", "b.mkv@1.5-4", "b.mkv@4-9", "c"]
        assert [v.path for v in ds.videos] == [
            lib / "clips" / "a.mp4",
            lib / "b.mkv",
            lib / "b.mkv",
            other,
        ]
        assert (ds.videos[1].start, ds.videos[1].end) == (1.5, 4.0) and ds.videos[0].start is None
        assert ds.captions_of(0) == ["a red ball", "a ball rolls"]
        assert ds.captions_of(1) == ["a kitchen", "a cosy kitchen"]
        assert ds.caption_video.tolist() == [0, 1, 0, 2, 3, 1]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"video": "a.mp4", "caption": "x"', r"bad\.jsonl:2: invalid JSON"),
        ('{"video": "a.mp4"}', r"bad\.jsonl:2: 'caption': caption must be a non-empty string"),
        ('{"caption": "x"}', r"bad\.jsonl:2: missing or empty string field 'video'"),
        (
            '{"video": "a.mp4", "caption": "x", "start": 5, "end": 2}',
            r"bad\.jsonl:2: 'end' \(2\.0\) must be after",
        ),
        ('{"video": "a.mp4", "caption": "x", "start": "soon"}', r"bad\.jsonl:2: 'start' must be"),
        ('["a.mp4", "x"]', r"bad\.jsonl:2: expected a JSON object"),
        (
            '{"video": "b.mp4", "caption": "x", "video_id": "a"}',
            r"bad\.jsonl:2: video_id 'a' already names",
        ),
    ],
)
def test_jsonl_errors(tmp_path, line, message):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b.mp4")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"video": "a.mp4", "caption": "ok", "video_id": "a"}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset("jsonl", path, "train")


def test_jsonl_missing_files(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(
        "".join(json.dumps({"video": f"v{i}.mp4", "caption": "c"}) + "\n" for i in range(3))
    )
    with pytest.raises(DatasetError, match=r"3 of 3 video files are missing: .*v0\.mp4"):
        load_dataset("jsonl", path, "train")
    assert len(load_dataset("jsonl", path, "train", check_files=False)) == 3
    with pytest.raises(DatasetError, match=r"val\.jsonl: JSONL annotations not found"):
        load_dataset("jsonl", tmp_path, "val")


# ----------------------------------------------------------------------------- dataset object


def make_ds(n_videos=20, seed=0, split="train"):
    rng = np.random.default_rng(seed)
    cv = np.sort(rng.integers(0, n_videos, size=3 * n_videos))
    rng.shuffle(cv)
    videos = [VideoItem(f"v{i}", Path(f"/x/v{i}.mp4")) for i in range(n_videos)]
    return CaptionDataset(
        "toy", videos, [f"cap{j}-of-v{v}" for j, v in enumerate(cv)], cv, split=split
    )


def test_captions_of_matches_brute_force():
    ds = make_ds()
    for i in range(len(ds)):
        expect = [c for c, v in zip(ds.captions, ds.caption_video) if v == i]
        assert ds.captions_of(i) == expect
    with pytest.raises(DatasetError, match="outside"):
        CaptionDataset("bad", ds.videos[:2], ["a"], np.array([2]))
    with pytest.raises(DatasetError, match="one entry per caption"):
        CaptionDataset("bad", ds.videos[:2], ["a", "b"], np.array([0]))


def test_split_validation_by_video():
    ds = make_ds(40)
    train, val = split_validation(ds, fraction=0.1, seed=3)
    assert len(val) == 4 and len(train) == 36 and (train.split, val.split) == ("train", "val")
    assert set(train.video_ids).isdisjoint(val.video_ids)
    assert sorted(train.video_ids + val.video_ids, key=lambda s: int(s[1:])) == ds.video_ids
    assert train.num_captions + val.num_captions == ds.num_captions
    for part in (train, val):
        for i, v in enumerate(part.videos):
            # every caption stays with its own video (the caption text names the video)
            assert part.captions_of(i) == ds.captions_of(ds.video_ids.index(v.video_id))
            assert all(c.endswith(f"-of-{v.video_id}") for c in part.captions_of(i))
    again = split_validation(ds, fraction=0.1, seed=3)[1]
    assert again.video_ids == val.video_ids
    assert split_validation(ds, fraction=0.1, seed=4)[1].video_ids != val.video_ids
    with pytest.raises(ConfigError, match="test split"):
        split_validation(make_ds(split="test"))
    with pytest.raises(ConfigError, match="fraction"):
        split_validation(ds, fraction=1.0)
    with pytest.raises(ConfigError, match="too few"):
        split_validation(make_ds(1))


def test_split_validation_keeps_groups_together():
    ds = make_ds(41)  # 20 runs of 2 and a last run of 1
    train, val = split_validation(ds, fraction=0.1, seed=3, group_size=2)
    idx = {v: i for i, v in enumerate(ds.video_ids)}
    held = {idx[v] // 2 for v in val.video_ids}
    assert len(held) == 2  # 10% of 21 runs
    assert sorted(idx[v] for v in val.video_ids) == sorted(i for i in range(41) if i // 2 in held)
    assert sorted(idx[v] for v in train.video_ids) == sorted(i for i in range(41) if i // 2 not in held)
    with pytest.raises(ConfigError, match="too few"):
        split_validation(make_ds(2), fraction=0.5, group_size=2)


def test_no_warning_for_complete_dataset(tmp_path):
    root = write_msrvtt(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("msrvtt", root, "train")
