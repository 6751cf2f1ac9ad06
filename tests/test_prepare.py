"""`p2p data pair | unpair | split` on generated images, including the bad cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from p2p.data.prepare import assign_splits
from p2p.images.eight_bit import read_image, save_image


def image(seed: int, height: int = 8, width: int = 12) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))


def make_folder(folder: Path, names: list[str], seed: int = 0, **size) -> dict[str, torch.Tensor]:
    images = {}
    for i, name in enumerate(names):
        images[name] = image(seed + i, **size)
        save_image(images[name], folder / name)
    return images


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_pair_matches_names_across_extensions_and_reports_unmatched(cli, tmp_path):
    a = make_folder(tmp_path / "A", ["1.png", "2.png", "sub/3.png", "only_a.png"])
    b = make_folder(tmp_path / "B", ["1.bmp", "2.png", "sub/3.png", "only_b.png"], seed=10)
    r = cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "AB", "--json")
    assert r.exit_code == 1, r.stderr  # finished, with skipped items
    report = json.loads(r.out)
    assert report["written"] == {str(tmp_path / "AB"): 3}
    assert sorted(s["name"] for s in report["skipped"]) == ["only_a.png", "only_b.png"]
    assert "skipped only_a.png: no match in" in r.stderr
    assert (f"A (left) is {tmp_path / 'A'}, B (right) is {tmp_path / 'B'}: a recipe translates "
            f"A to B; data.direction: BtoA translates {tmp_path / 'B'} to") in r.stderr
    assert files(tmp_path / "AB") == ["1.png", "2.png", "sub/3.png"]
    combined = read_image(tmp_path / "AB" / "sub" / "3.png")
    assert torch.equal(combined, torch.cat([a["sub/3.png"], b["sub/3.png"]], dim=2))


def test_pair_strict_fails_before_writing(cli, tmp_path):
    make_folder(tmp_path / "A", ["1.png", "2.png"])
    make_folder(tmp_path / "B", ["1.png"])
    r = cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "AB", "--strict")
    assert r.exit_code == 2 and "1 files have no partner: 2.png" in r.stderr
    assert not (tmp_path / "AB").exists()


def test_pair_heights_differ_unless_resized(cli, tmp_path):
    make_folder(tmp_path / "A", ["1.png"], height=8, width=8)
    make_folder(tmp_path / "B", ["1.png"], height=16, width=32)
    r = cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "AB")
    assert r.exit_code == 1 and "heights differ (8 vs 16); use --height" in r.stderr
    r = cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "AB", "--height", "4",
            "--ext", "jpg")
    assert r.exit_code == 0, r.stderr
    assert read_image(tmp_path / "AB" / "1.jpg").shape == (3, 4, 4 + 8)


def test_pair_keeps_label_maps_exact_png_by_default_and_nearest_when_resized(cli, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "labels").mkdir()
    photo = (torch.rand(3, 16, 16) * 255).to(torch.uint8)
    save_image(photo, tmp_path / "photos" / "1.jpg")
    labels = torch.zeros(3, 16, 16, dtype=torch.uint8)
    labels[0, :, 5:] = 255  # two colours: a label map
    Image.fromarray(labels.permute(1, 2, 0).numpy()).save(tmp_path / "labels" / "1.jpg",
                                                          quality=100)
    r = cli("data", "pair", tmp_path / "photos", tmp_path / "labels", tmp_path / "AB",
            "--height", "24")
    assert r.exit_code == 0, r.stderr
    assert files(tmp_path / "AB") == ["1.png"]  # PNG, though the inputs were JPEG
    pair = Image.open(tmp_path / "AB" / "1.png")
    right = pair.crop((pair.width // 2, 0, pair.width, pair.height))
    source_colours = len(Image.open(tmp_path / "labels" / "1.jpg").getcolors(1 << 16))
    assert len(right.getcolors(1 << 16)) == source_colours  # no blended colours added


def test_pair_reports_bad_images_by_name(cli, tmp_path):
    make_folder(tmp_path / "A", ["1.png", "2.png"])
    make_folder(tmp_path / "B", ["1.png"])
    (tmp_path / "B" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "AB")
    assert r.exit_code == 1
    assert "skipped 2.png:" in r.stderr and str(tmp_path / "B" / "2.png") in r.stderr
    assert files(tmp_path / "AB") == ["1.png"]


def test_pair_then_unpair_round_trip(cli, tmp_path):
    a = make_folder(tmp_path / "A", ["x.png", "y.png"])
    b = make_folder(tmp_path / "B", ["x.png", "y.png"], seed=5)
    assert cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "AB").exit_code == 0
    r = cli("data", "unpair", tmp_path / "AB", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    for name in ("x.png", "y.png"):
        assert torch.equal(read_image(tmp_path / "out" / "A" / name), a[name])
        assert torch.equal(read_image(tmp_path / "out" / "B" / name), b[name])


def test_unpair_skips_odd_widths_and_bad_files(cli, tmp_path):
    make_folder(tmp_path / "AB", ["even.png"], width=12)
    make_folder(tmp_path / "AB", ["odd.png"], width=11)
    (tmp_path / "AB" / "empty.jpg").write_bytes(b"")
    r = cli("data", "unpair", tmp_path / "AB", tmp_path / "out", "--ext", "png")
    assert r.exit_code == 1
    assert "skipped odd.png: odd width 11" in r.stderr and "skipped empty.jpg:" in r.stderr
    assert files(tmp_path / "out") == ["A/even.png", "B/even.png"]


def split_of(folder: Path) -> dict[str, str]:
    return {Path(name).name: name.split("/")[0] for name in files(folder)}


def test_split_counts_and_reproducibility(cli, tmp_path):
    make_folder(tmp_path / "pairs", [f"{i}.png" for i in range(50)], height=4, width=8)
    r = cli("data", "split", tmp_path / "pairs", tmp_path / "s1", "--val", "0.1",
            "--test", "0.2", "--seed", "3", "--json")
    assert r.exit_code == 0, r.stderr
    assert list(json.loads(r.out)["written"].values()) == [35, 5, 10]
    cli("data", "split", tmp_path / "pairs", tmp_path / "s2", "--val", "0.1", "--test", "0.2",
        "--seed", "3")
    cli("data", "split", tmp_path / "pairs", tmp_path / "s3", "--val", "0.1", "--test", "0.2",
        "--seed", "4")
    assert split_of(tmp_path / "s1") == split_of(tmp_path / "s2")
    assert split_of(tmp_path / "s1") != split_of(tmp_path / "s3")
    assert len(files(tmp_path / "pairs")) == 50  # copied, not moved


def test_split_link_and_in_place_move(cli, tmp_path):
    make_folder(tmp_path / "pairs", [f"{i}.png" for i in range(10)], height=4, width=8)
    r = cli("data", "split", tmp_path / "pairs", tmp_path / "linked", "--mode", "link")
    assert r.exit_code == 0, r.stderr
    linked = next((tmp_path / "linked" / "train").iterdir())
    assert linked.stat().st_ino == (tmp_path / "pairs" / linked.name).stat().st_ino
    r = cli("data", "split", tmp_path / "pairs", tmp_path / "pairs", "--mode", "move")
    assert r.exit_code == 0, r.stderr
    assert split_of(tmp_path / "pairs") == split_of(tmp_path / "linked")
    assert not list((tmp_path / "pairs").glob("*.png"))  # all moved into train/ val/ test/


def test_split_bad_cases(cli, tmp_path):
    make_folder(tmp_path / "pairs", ["1.png", "2.png"])
    (tmp_path / "pairs" / "3.png").write_bytes(b"not a png")
    r = cli("data", "split", tmp_path / "pairs", tmp_path / "out", "--val", "0", "--test", "0")
    assert r.exit_code == 1 and "skipped 3.png:" in r.stderr
    assert files(tmp_path / "out") == ["train/1.png", "train/2.png"]
    r = cli("data", "split", tmp_path / "pairs", tmp_path / "out", "--val", "0.5", "--test", "0.5")
    assert r.exit_code == 2 and "leave some for train" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("data", "split", tmp_path / "empty", tmp_path / "out")
    assert r.exit_code == 2 and "no images to split" in r.stderr
    r = cli("data", "split", tmp_path / "missing", tmp_path / "out")
    assert r.exit_code == 2 and "not a folder" in r.stderr


@given(names=st.sets(st.text("abc123", min_size=1, max_size=6), max_size=40),
       val=st.floats(0, 0.45), test=st.floats(0, 0.45), seed=st.integers(0, 2**32))
def test_assign_splits_properties(names, val, test, seed):
    names = list(names)
    assignment = assign_splits(names, val, test, seed)
    assert assignment == assign_splits(list(reversed(names)), val, test, seed)
    counts = {s: list(assignment.values()).count(s) for s in ("train", "val", "test")}
    assert counts["val"] == round(val * len(names))
    assert counts["test"] == round(test * len(names))
    assert sum(counts.values()) == len(names)


@pytest.mark.parametrize("val,test", [(-0.1, 0.1), (0.6, 0.4)])
def test_assign_splits_rejects_bad_ratios(val, test):
    from p2p.errors import P2PError
    with pytest.raises(P2PError):
        assign_splits(["a"], val, test, 0)


@pytest.mark.parametrize("a, b, out, relation", [
    ("A", "B", "A", "is the input folder"),  # `p2p data pair A B A` overwrote its inputs
    ("A", "B", "B", "is the input folder"),
    ("A", "B", ".", "contains the input folder"),
    ("A", "B", "A/paired", "is inside the input folder"),
    ("A", "B", "link-to-A", "is the input folder"),  # the same folder under another name
])
def test_pair_refuses_an_output_folder_that_overlaps_an_input(cli, tmp_path, a, b, out,
                                                              relation):
    originals = make_folder(tmp_path / "A", ["1.png", "2.png"])
    make_folder(tmp_path / "B", ["1.png", "2.png"], seed=5)
    (tmp_path / "link-to-A").symlink_to(tmp_path / "A")
    before = files(tmp_path)
    r = cli("data", "pair", tmp_path / a, tmp_path / b, tmp_path / out)
    assert r.exit_code == 2 and r.out == "", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {tmp_path / out}: the output folder {relation} "), r.stderr
    assert lines[0].endswith("(choose an output folder apart from the inputs)")
    assert files(tmp_path) == before  # nothing written, nothing overwritten
    assert torch.equal(read_image(tmp_path / "A" / "1.png"), originals["1.png"])


def test_unpair_refuses_its_input_as_output_but_allows_a_sibling(cli, tmp_path):
    make_folder(tmp_path / "data" / "AB", ["1.png"], height=4, width=8)
    r = cli("data", "unpair", tmp_path / "data" / "AB", tmp_path / "data" / "AB")
    assert r.exit_code == 2 and "is inside the input folder" in r.stderr
    assert files(tmp_path / "data") == ["AB/1.png"]
    r = cli("data", "unpair", tmp_path / "data" / "AB", tmp_path / "data")  # data/A, data/B
    assert r.exit_code == 0, r.stderr
    assert files(tmp_path / "data") == ["A/1.png", "AB/1.png", "B/1.png"]


def test_split_fractions_count_only_images_it_places(cli, tmp_path):
    make_folder(tmp_path / "pairs", [f"{i}.png" for i in range(10)], height=4, width=8)
    for i in range(10, 20):
        (tmp_path / "pairs" / f"{i}.png").write_bytes(b"not an image")
    r = cli("data", "split", tmp_path / "pairs", tmp_path / "out", "--val", "0.2",
            "--test", "0.2", "--json")
    assert r.exit_code == 1  # finished, with skipped files
    result = json.loads(r.out)
    # 20% of the 10 images that decode, not of the 20 files.
    assert list(result["written"].values()) == [6, 2, 2]
    assert sorted(s["name"] for s in result["skipped"]) == [f"{i}.png" for i in range(10, 20)]
    r = cli("data", "split", tmp_path / "pairs", tmp_path / "out", "--val", "0.5",
            "--test", "0.5")
    assert r.exit_code == 2 and "leave some for train" in r.stderr
