from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from p2p.data.paired import PairedImages, augment, batch_indices, find_pairs
from p2p.errors import P2PError


def write_pair(path, width=16, height=8, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def test_aligned_layout_and_direction(tmp_path):
    for i in range(3):
        write_pair(tmp_path / "train" / f"{i}.png", seed=i)
    ab = np.asarray(Image.open(tmp_path / "train" / "0.png"))
    a2b = PairedImages(tmp_path, "train", "AtoB", load_size=8)
    b2a = PairedImages(tmp_path, "train", "BtoA", load_size=8)
    assert len(a2b) == 3 and a2b.names == ["0.png", "1.png", "2.png"]
    source, target = a2b[0]
    assert torch.equal(source, torch.from_numpy(ab[:, :8].copy()).permute(2, 0, 1))
    assert torch.equal(target, torch.from_numpy(ab[:, 8:].copy()).permute(2, 0, 1))
    assert torch.equal(b2a[0][0], target) and torch.equal(b2a[0][1], source)


def test_separate_folders_and_channels(tmp_path):
    for side in "AB":
        for name in ("x.png", "y.png"):
            write_pair(tmp_path / "val" / side / name, width=8)
    data = PairedImages(tmp_path, "val", "AtoB", load_size=4, in_channels=1, out_channels=3)
    source, target = data[1]
    assert source.shape == (1, 4, 4) and target.shape == (3, 4, 4)


def test_uncached_reads_equal_cached(tmp_path):
    for i in range(4):
        write_pair(tmp_path / "train" / f"{i}.png", seed=i)
    cached = PairedImages(tmp_path, load_size=6)
    lazy = PairedImages(tmp_path, load_size=6, cache_gb=0)
    assert cached.cache is not None and lazy.cache is None
    for a, b in zip(cached.get_many([3, 1]), lazy.get_many([3, 1]), strict=True):
        assert torch.equal(a, b)


def test_prefetched_batches_are_the_batches_without_prefetch(tmp_path, monkeypatch):
    for i in range(7):
        write_pair(tmp_path / "train" / f"{i}.png", seed=i)
    cached = PairedImages(tmp_path, load_size=6)
    lazy = PairedImages(tmp_path, load_size=6, cache_gb=0)
    loads = Counter()
    original = lazy._load
    monkeypatch.setattr(lazy, "_load", lambda index: loads.update([index]) or original(index))
    for iteration in range(6):  # as the training step: this batch, then the next one started
        indices = batch_indices(len(lazy), iteration, 3, seed=1)
        for a, b in zip(cached.get_many(indices), lazy.get_many(indices), strict=True):
            assert torch.equal(a, b)
        if iteration == 2:  # batches nobody asks for are dropped, not kept forever
            lazy.prefetch([0, 1])
            lazy.prefetch([2, 3])
        lazy.prefetch(batch_indices(len(lazy), iteration + 1, 3, seed=1))
    assert len(lazy._prefetched) <= 2
    # Each batch decoded once (the prefetched ones were used), plus at most what was asked in
    # vain (cancelled if not started).
    assert sum(loads.values()) <= 3 * 7 + 4


def test_bad_data_is_named(tmp_path):
    write_pair(tmp_path / "train" / "odd.png", width=15)
    with pytest.raises(P2PError, match="odd.png: width 15 is odd"):
        PairedImages(tmp_path, load_size=8)
    (tmp_path / "train" / "odd.png").unlink()
    (tmp_path / "train" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(P2PError, match="broken.jpg"):
        PairedImages(tmp_path, load_size=8)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(P2PError, match="no images"):
        find_pairs(tmp_path / "empty", "test")
    write_pair(tmp_path / "sep" / "train" / "A" / "1.png")
    write_pair(tmp_path / "sep" / "train" / "B" / "2.png")
    with pytest.raises(P2PError, match="'1.png' has no partner in B/"):
        find_pairs(tmp_path / "sep", "train")
    with pytest.raises(P2PError, match="not found"):
        find_pairs(tmp_path / "missing", "train")


@given(n=st.integers(1, 30), batch=st.integers(1, 5), seed=st.integers(0, 1000))
def test_every_item_once_per_epoch(n, batch, seed):
    iterations = n  # n iterations of `batch` items = `batch` full epochs
    seen = Counter(i for it in range(iterations) for i in batch_indices(n, it, batch, seed))
    assert set(seen) == set(range(n)) and set(seen.values()) == {batch}


@settings(max_examples=30, deadline=None)
@given(load=st.integers(8, 20), crop=st.integers(1, 8), seed=st.integers(0, 99),
       iteration=st.integers(0, 10**6), flip=st.booleans())
def test_source_and_target_get_the_same_crop_and_flip(load, crop, seed, iteration, flip):
    images = torch.arange(2 * 3 * load * load).reshape(2, 3, load, load)
    s, t = augment(images, images.clone(), crop, flip, seed, iteration)
    assert s.shape == (2, 3, crop, crop) and torch.equal(s, t)
    again = augment(images, images.clone(), crop, flip, seed, iteration)[0]
    assert torch.equal(s, again)  # a pure function of (seed, iteration)


def test_resize_without_antialias_matches_opencv_bicubic(tmp_path):
    # Stripes of period 2, shrunk from 16 to 8 columns. The expected row is what
    # cv2.resize(..., interpolation=cv2.INTER_CUBIC) returns for this input (opencv-python 4.x;
    # on random 600 -> 256 images it also equals our resize exactly). Pillow's antialiased resize
    # averages the stripes instead.
    stripes = np.zeros((8, 32, 3), np.uint8)
    stripes[:, 0:16:2] = 255
    stripes[:, 16:32:2] = 255
    (tmp_path / "train").mkdir()
    Image.fromarray(stripes).save(tmp_path / "train" / "s.png")
    plain = PairedImages(tmp_path, load_size=8, antialias=False)[0][0]
    assert plain[0, 0].tolist() == [104, 128, 128, 128, 128, 128, 128, 151]
    smooth = PairedImages(tmp_path, load_size=8)[0][0]
    assert smooth[0, 0].tolist() != plain[0, 0].tolist()
