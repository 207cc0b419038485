"""Few-shot methods against hand-computed closed forms; zero-shot limits; classifier files; readers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidclip.core.errors import ConfigError, DatasetError
from vidclip.recognition import fewshot as fs
from vidclip.recognition.classifier import VideoClassifier, check_model, load_classifier
from vidclip.recognition.datasets import (
    clean_class_name,
    read_class_folders,
    read_class_names,
    read_split,
    sample_shots,
)
from vidclip.recognition.run import (
    carve_validation,
    classification_metrics,
    fit_few_shot,
    zero_shot_classifier,
)


def unit(*rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True)


# Two classes in 2-D: text weights along the axes; one shot each; one query.
W = unit([1.0, 0.0], [0.0, 1.0])
F = unit([1.0, 1.0], [0.0, 1.0])  # shot of class 0 at 45 deg (ambiguous for zero-shot), shot of class 1 on its axis
Y = torch.tensor([0, 1])
Q = unit([0.6, 0.8])


def test_tip_adapter_matches_hand_computation():
    a, b = 2.0, 3.0
    c0, c1 = math.cos(math.atan2(0.8, 0.6) - math.pi / 4), 0.8  # cos(query, shot 0), cos(query, shot 1)
    zs = [100 * 0.6, 100 * 0.8]
    expected = [zs[0] + a * math.exp(-b * (1 - c0)), zs[1] + a * math.exp(-b * (1 - c1))]
    got = fs.tip_logits(Q, W, F, fs.one_hot(Y, 2), alpha=a, beta=b)
    assert got[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_gda_matches_hand_computation():
    # 3 features in 2-D, classes {0: x1, x2}, {1: x3}: mean, shared covariance, KS precision by hand.
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    weight, bias = fs.gda_fit(X, y, 2)
    mu = np.array([[0.5, 0.5], [-1.0, 0.0]])
    centred = np.array([[0.5, -0.5], [-0.5, 0.5], [0.0, 0.0]])
    S = centred.T @ centred / 2  # unbiased, n - 1 = 2
    P = 2 * np.linalg.pinv(2 * S + np.trace(S) * np.eye(2))
    np.testing.assert_allclose(weight.numpy(), mu @ P, rtol=1e-5)
    np.testing.assert_allclose(bias.numpy(), np.log(0.5) - 0.5 * np.einsum("cd,de,ce->c", mu, P, mu), rtol=1e-5)
    q = torch.tensor([[0.2, 0.9]])
    got = fs.gda_logits(q, W, weight, bias, alpha=0.5)
    np.testing.assert_allclose(got.numpy(), 100 * q.numpy() @ W.numpy().T + 0.5 * (q.numpy() @ (mu @ P).T + bias.numpy()),
                               rtol=1e-5)


def test_proker_matches_hand_computation():
    beta, lam = 2.0, 0.5
    A = fs.proker_fit(F, Y, W, beta=beta, lam=lam)
    Fn, Wn = F.double().numpy(), W.double().numpy()
    K = np.exp(-beta * (1 - Fn @ Fn.T))
    expected_A = np.linalg.solve(K / lam + np.eye(2), np.eye(2) - Fn @ Wn.T)
    np.testing.assert_allclose(A.numpy(), expected_A, rtol=1e-5, atol=1e-7)
    q = Q.double().numpy()
    expected = 100 * (q @ Wn.T + np.exp(-beta * (1 - q @ Fn.T)) @ expected_A)
    got = fs.proker_logits(Q, W, F, A, alpha=1.0, beta=beta)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    # lambda -> 0 is infinite regularisation towards the zero-shot classifier: the correction vanishes.
    A0 = fs.proker_fit(F, Y, W, beta=beta, lam=1e-9)
    np.testing.assert_allclose(fs.proker_logits(Q, W, F, A0, alpha=1.0, beta=beta).numpy(),
                               fs.zero_shot_logits(Q, W).numpy(), atol=1e-5)


def test_ape_criterion_matches_the_pairwise_loop():
    torch.manual_seed(0)
    C, K, D = 3, 2, 5
    Wr = torch.nn.functional.normalize(torch.randn(C, D), dim=-1)
    keys = torch.nn.functional.normalize(torch.randn(C * K, D), dim=-1)
    y = torch.arange(C).repeat_interleave(K)
    # APE's definition: samples of class c = [its text weight, its K cache features]; mean over
    # every pair of samples of different classes of the channel-wise product.
    feats = [torch.cat([Wr[c:c + 1], keys[y == c]]) for c in range(C)]
    total, count = torch.zeros(D, dtype=torch.float64), 0
    for i in range(C):
        for j in range(C):
            if i != j:
                for a in feats[i]:
                    for b in feats[j]:
                        total += (a * b).double()
                        count += 1
    expected = -0.2 * total / count + 0.8 * Wr.double().var(dim=0)
    np.testing.assert_allclose(fs.ape_criterion(Wr, keys, y, w=(0.2, 0.8)).numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_ape_logits_match_hand_computation():
    channels = torch.tensor([0, 1])  # all channels of the 2-D case: refinement only renormalises
    values = fs.one_hot(Y, 2)
    a, b, g = 1.5, 2.0, 0.5
    key_probs = (F @ W.T).softmax(1)
    div = (values * torch.log2((values + 1e-6) / (key_probs + 1e-6))).sum(1, keepdim=True)
    expected = 100 * Q @ W.T + a * torch.exp(-b * (1 - Q @ F.T)) @ (values * torch.exp(g * div))
    got = fs.ape_logits(Q, W, F, values, channels, alpha=a, beta=b, gamma=g)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)


def test_linear_probe_logits_are_sklearns():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(30, 4)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 30))
    weight, bias = fs.linear_fit(X, y, 3, C=1.0)
    ref = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(X.double().numpy(), y.numpy())
    np.testing.assert_allclose(fs.linear_logits(X, weight, bias).numpy(), ref.decision_function(X.double().numpy()),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["tip", "tip-f", "gda", "proker", "ape"])
def test_alpha_zero_is_exactly_zero_shot(method):
    torch.manual_seed(1)
    C, D = 4, 8
    Wr = torch.nn.functional.normalize(torch.randn(C, D), dim=-1)
    X = torch.nn.functional.normalize(torch.randn(12, D), dim=-1)
    y = torch.arange(C).repeat(3)
    params = {**fs.DEFAULTS[method], "alpha": 0.0}
    state = fs._fit_state(method, X, y, Wr, params, seed=0)
    q = torch.nn.functional.normalize(torch.randn(5, D), dim=-1)
    assert torch.equal(fs.method_logits(method, q, Wr, state, params), fs.zero_shot_logits(q, Wr))


class FakeIdentity:
    def __init__(self, digest="d1"):
        self.d = {"family": "open_clip", "name": "fake", "pretrained": None, "embed_dim": 8, "image_size": 32,
                  "random_weights": False, "weights_digest": digest}
        self.name = "fake"

    def to_dict(self):
        return dict(self.d)

    def key(self):
        from vidclip.models.clip.load import ModelIdentity

        return ModelIdentity.from_dict(self.d).key()


class FakeClip:
    """encode_text: a fixed random embedding per text (hash-seeded)."""

    identity = FakeIdentity()

    def encode_text(self, texts):
        out = []
        for t in texts:
            g = torch.Generator().manual_seed(sum(map(ord, t)) * 7919 % (2**31))
            out.append(torch.randn(8, generator=g))
        return torch.stack(out)


@pytest.mark.parametrize("method", fs.METHODS)
def test_saved_classifier_gives_identical_logits_and_refuses_another_model(tmp_path, method):
    torch.manual_seed(2)
    base = zero_shot_classifier(FakeClip(), ["ApplyEyeMakeup", "brush_hair", "YoYo"])
    assert base.prompt_names == ["apply eye makeup", "brush hair", "yo yo"]
    X = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    y = torch.arange(3).repeat(4)
    clf = fit_few_shot(base, method, X, y, shots=4)
    assert clf.search["grid"] == fs.GRIDS[method] and set(clf.params) >= set(fs.DEFAULTS[method])
    assert "carved" in clf.search["validation"]
    path = clf.save(tmp_path / "c")
    loaded = load_classifier(path)
    q = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    assert torch.equal(loaded.logits(q), clf.logits(q))
    assert loaded.classes == clf.classes and loaded.method == method and loaded.params == clf.params
    check_model(loaded, FakeIdentity(), str(path))
    with pytest.raises(ConfigError, match="fitted on features of fake"):
        check_model(loaded, FakeIdentity("other"), str(path))


def test_search_is_on_validation_only():
    # Validation labels decide: with val = the shots relabelled, the chosen alpha differs from
    # what a search on the true labels would choose; the test set is never an argument.
    torch.manual_seed(3)
    C, D = 3, 6
    Wr = torch.nn.functional.normalize(torch.randn(C, D), dim=-1)
    X = torch.nn.functional.normalize(torch.randn(9, D), dim=-1)
    y = torch.arange(C).repeat(3)
    zs_pred = fs.zero_shot_logits(X, Wr).argmax(1)
    fitted = fs.fit("gda", X, y, Wr, val=(X, zs_pred))  # val agrees with zero-shot: the smallest alpha wins
    assert fitted.params["alpha"] == min(fs.GRIDS["gda"]["alpha"])
    assert fitted.search["val_accuracy"] == 1.0 and fitted.search["val_zero_shot_accuracy"] == 1.0


def test_carve_validation_holds_out_a_quarter_per_class():
    y = torch.arange(4).repeat_interleave(8)
    fit_idx, val_idx = carve_validation(y, 4)
    assert len(val_idx) == 8 and len(fit_idx) == 24 and not set(fit_idx.tolist()) & set(val_idx.tolist())
    assert torch.bincount(y[val_idx]).tolist() == [2, 2, 2, 2]
    assert len(carve_validation(torch.arange(4), 4)[1]) == 0  # one shot: nothing to carve


def test_metrics_hand_case():
    logits = torch.tensor([[3.0, 2, 1], [1, 3, 2], [3, 1, 2], [1, 2, 3]])
    labels = torch.tensor([0, 2, 1, 2])
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["top1"] == 0.5  # rows 0 and 3
    assert m["top5"] == 1.0  # top-3 of 3 classes
    assert m["mean_class_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]


# ----------------------------------------------------------------------------- readers


def test_clean_class_names_and_overrides(tmp_path):
    assert clean_class_name("ApplyEyeMakeup") == "apply eye makeup"
    assert clean_class_name("brush_hair") == "brush hair"
    assert clean_class_name("YoYo") == "yo yo"
    assert clean_class_name("playing guitar") == "playing guitar"
    assert clean_class_name("PlayingDaf") == "playing daf"
    (tmp_path / "n.txt").write_text("YoYo\tyo-yo\n# comment\nbrush_hair,brushing hair\n")
    assert read_class_names(tmp_path / "n.txt") == {"YoYo": "yo-yo", "brush_hair": "brushing hair"}


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_ucf101_layout(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_A_g08_c01.avi 1\nYoYo/v_Y_g08_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("YoYo/v_Y_g01_c01.avi\n")
    for rel in ("ApplyEyeMakeup/v_A_g08_c01.avi", "YoYo/v_Y_g08_c01.avi", "YoYo/v_Y_g01_c01.avi"):
        touch(tmp_path / "UCF-101" / rel)
    train = read_split(tmp_path, "train")
    assert train.classes == ["ApplyEyeMakeup", "YoYo"] and train.labels == [0, 1]
    test = read_split(tmp_path, "test")
    assert test.labels == [1] and test.paths[0].endswith("v_Y_g01_c01.avi")
    (lists / "testlist01.txt").write_text("YoYo/v_Y_g01_c01.avi\nJuggling/v_J_g01_c01.avi\n")
    with pytest.raises(DatasetError, match=r"testlist01.txt:2: unknown class 'Juggling'"):
        read_split(tmp_path, "test")
    (lists / "testlist01.txt").write_text("YoYo/v_Y_g02_c01.avi\n")
    with pytest.raises(DatasetError, match=r"testlist01.txt:1: video .*v_Y_g02_c01.avi is listed but missing"):
        read_split(tmp_path, "test")
    skipped = read_split(tmp_path, "test", skip_missing=True)
    assert skipped.items == [] and "v_Y_g02_c01.avi" in skipped.missing[0]


def test_hmdb51_layout(tmp_path):
    (tmp_path / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (tmp_path / "cartwheel_test_split1.txt").write_text("d.avi 2\n")
    for rel in ("brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "cartwheel/d.avi"):
        touch(tmp_path / rel)
    test = read_split(tmp_path, "test")
    assert test.classes == ["brush_hair", "cartwheel"]
    assert sorted((p.rsplit("/", 1)[1], y) for p, y in test.items) == [("b.avi", 0), ("d.avi", 1)]
    assert [p.rsplit("/", 1)[1] for p in read_split(tmp_path, "train").paths] == ["a.avi"]


def test_kinetics_and_csv_layouts(tmp_path):
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                    "arm wrestling,abc,10,20,val\nabseiling,xyz,0,10,train\n")
    touch(tmp_path / "val" / "arm wrestling" / "abc_000010_000020.mp4")
    touch(tmp_path / "train" / "abseiling" / "xyz_000000_000010.mp4")
    val = read_split(tmp_path / "k.csv", "val")
    assert val.classes == ["abseiling", "arm wrestling"] and val.labels == [1]
    (tmp_path / "list.csv").write_text("path,label\nval/arm wrestling/abc_000010_000020.mp4,arm wrestling\n")
    assert read_split(None, str(tmp_path / "list.csv"), classes=val.classes).labels == [1]
    (tmp_path / "bad.csv").write_text("file,label\nx.mp4,a\n")
    with pytest.raises(DatasetError, match=r"bad.csv: missing column\(s\) \['path'\]"):
        read_split(None, str(tmp_path / "bad.csv"))


def test_class_folders_empty_class_and_too_few_shots(tmp_path):
    touch(tmp_path / "a" / "1.mp4")
    touch(tmp_path / "a" / "2.mp4")
    touch(tmp_path / "b" / "1.mp4")
    data = read_class_folders(tmp_path)
    assert data.classes == ["a", "b"] and data.labels == [0, 0, 1]
    assert len(sample_shots(data, 1).items) == 2
    with pytest.raises(DatasetError, match=r"--shots 2 needs 2 training videos per class, but 'b' has 1"):
        sample_shots(data, 2)
    (tmp_path / "c").mkdir()
    with pytest.raises(DatasetError, match=r"/c: class folder holds no video files"):
        read_class_folders(tmp_path)


def test_unknown_class_folder_in_a_training_split(tmp_path):
    touch(tmp_path / "train" / "zebra" / "1.mp4")
    with pytest.raises(DatasetError, match=r"class 'zebra' is not one of the classes"):
        read_split(None, str(tmp_path / "train"), classes=["a", "b"])


def test_classifier_file_is_checked(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not a file")
    with pytest.raises(ConfigError, match="not a vidclip classifier file"):
        load_classifier(tmp_path / "x.safetensors")
    VideoClassifier  # noqa: B018 (imported for the type)


def test_prompt_ensemble_is_the_normalised_mean_of_normalised_prompts():
    from vidclip.recognition.zeroshot import text_classifier

    clip = FakeClip()
    W = text_classifier(clip, ["brush hair", "yo yo"], ["a {}.", "a video of {}"])
    for c, name in enumerate(["brush hair", "yo yo"]):
        e = clip.encode_text([f"a {name}.", f"a video of {name}"])
        e = e / e.norm(dim=1, keepdim=True)
        m = e.mean(0)
        torch.testing.assert_close(W[c], m / m.norm())


def test_templates_file(tmp_path):
    from vidclip.recognition.zeroshot import read_templates

    (tmp_path / "t.txt").write_text("# mine\na clip of {}\n{} on video\n")
    assert read_templates(tmp_path / "t.txt") == ["a clip of {}", "{} on video"]
    (tmp_path / "bad.txt").write_text("no placeholder\n")
    with pytest.raises(ConfigError, match=r"bad.txt: template 1 'no placeholder' must contain '\{\}'"):
        read_templates(tmp_path / "bad.txt")


def test_mean_pooling_from_the_store(tmp_path):
    from vidclip.features.pooling import Pooler
    from vidclip.features.store import FeatureStore, FeatureWriter

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4)).astype(np.float16), rng.normal(size=(5, 4)).astype(np.float16)
    with FeatureWriter(tmp_path, {**FakeIdentity().to_dict(), "embed_dim": 4}, {"name": "uniform", "num_frames": 5}) as w:
        w.add("a", "a.mp4", a, np.arange(3), np.arange(3.0))
        w.add("b", "b.mp4", b, np.arange(5), np.arange(5.0))
    got = Pooler({"name": "mean"}).pool_store(FeatureStore(tmp_path), ["b", "a"])
    for row, frames in zip(got, (b, a)):
        f = frames.astype(np.float64)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        m = f.mean(0)
        np.testing.assert_allclose(row, m / np.linalg.norm(m), rtol=1e-5, atol=1e-6)
