"""``p2p eval run``: the table's protocol (paper mode at batch 4, float outputs for FID,
truncated uint8 for IS), the targets of tasks and recipes, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from p2p import published
from p2p.data.paired import PairedImages, to_float
from p2p.errors import P2PError
from p2p.images.eight_bit import to_uint8
from p2p.metrics import class_scores, frechet
from p2p.metrics.features import Settings
from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.recipe import load_recipe
from p2p.weights.checkpoint import generator_state, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CONFIG = GeneratorConfig(num_downs=6, ngf=8)  # 6 levels: the smallest with dropout


def write_pairs(root: Path, split: str, count: int, size: int = 64) -> Path:
    folder = root / split
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size, 2 * size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i + 1}.png")
    return root


def make_generator(seed: int = 0) -> UnetGenerator:
    torch.manual_seed(seed)
    return init_weights(UnetGenerator(CONFIG))


class Recorder(nn.Module):
    """A stand-in Inception: records its inputs, returns a cheap deterministic output."""

    def __init__(self, softmax: bool = False):
        super().__init__()
        self.inputs, self.softmax = [], softmax

    def forward(self, x):
        self.inputs.append(x.clone())
        pooled = torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)
        return pooled.softmax(1) if self.softmax else pooled


def as_model(generator: nn.Module):
    """The generator as the protocol runs it (fp32, the reference layout), reading AtoB."""
    return published.protocol_model(generator, generator_state(generator, "AtoB", 64),
                                    torch.device("cpu"))


@pytest.fixture
def dataset(tmp_path) -> PairedImages:
    return PairedImages(write_pairs(tmp_path / "data", "test", 6), "test", "AtoB", 64)


def test_paper_mode_uses_each_batch_of_4s_statistics_and_dropout(dataset):
    generator = make_generator().eval()
    torch.manual_seed(5)
    outputs = list(published.generated(as_model(generator), dataset, 4))
    assert [len(o) for o in outputs] == [4, 2] and not generator.training
    sources, _ = dataset.get_many([0, 1, 2, 3])
    reference = make_generator().train()
    torch.manual_seed(5)
    with torch.no_grad():
        expected = reference(to_float(sources))
    torch.testing.assert_close(outputs[0], expected)
    torch.manual_seed(6)
    other_seed = next(published.generated(as_model(generator), dataset, 4))
    assert not torch.allclose(other_seed, outputs[0])  # dropout is on


def test_fid_reads_float_outputs_and_is_their_truncated_uint8(dataset):
    generator = make_generator()
    fid_net, is_net = Recorder(), Recorder(softmax=True)
    torch.manual_seed(0)  # the same dropout noise as below
    result = published.evaluate(as_model(generator), dataset, fid_net, is_net,
                                Settings(batch_size=4), splits=2)
    same = make_generator()
    torch.manual_seed(0)
    outputs = torch.cat(list(published.generated(as_model(same), dataset, 4)))
    real_inputs, fake_inputs = torch.cat(fid_net.inputs[:2]), torch.cat(fid_net.inputs[2:])
    targets = torch.stack([dataset[i][1] for i in range(6)])
    assert torch.equal(real_inputs, torch.stack([frechet.fid_input(t) for t in targets]))
    assert torch.equal(fake_inputs, outputs)  # as they are: not rounded to uint8 levels
    assert not torch.equal(fake_inputs, to_uint8(outputs).float() / 127.5 - 1)
    assert torch.equal(torch.cat(is_net.inputs),
                       torch.stack([class_scores.is_input(to_uint8(o)) for o in outputs]))
    features = lambda x: torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).double().numpy()  # noqa: E731
    expected_fid = frechet.frechet_distance(frechet.statistics(features(real_inputs)),
                                        frechet.statistics(features(outputs)))
    probabilities = np.concatenate([Recorder(softmax=True)(x).double().numpy()
                                    for x in is_net.inputs])
    assert result.fid == pytest.approx(expected_fid, rel=1e-9)
    assert (result.inception_score, result.is_std) == pytest.approx(
        class_scores.inception_score(probabilities, 2))
    assert (result.n_real, result.n_fake) == (6, 6)


def test_real_statistics_are_cached_by_the_split_files(dataset, p2p_home):
    fid_net, is_net = Recorder(), Recorder(softmax=True)
    key = list(published.dataset_key_items(dataset, "test"))
    first = published.evaluate(as_model(make_generator()), dataset, fid_net, is_net, Settings(),
                               splits=2, real_key_items=key)
    seen = len(fid_net.inputs)
    progress = []
    again = published.evaluate(as_model(make_generator()), dataset, fid_net, is_net, Settings(),
                               splits=2, real_key_items=key,
                               progress=lambda *a: progress.append(a))
    assert len(fid_net.inputs) - seen == 2  # the two fake batches only
    assert progress[0] == (6, 12) and progress[-1] == (12, 12)
    assert len(list((p2p_home / "fid-stats").glob("*.npz"))) == 1
    assert np.isfinite([first.fid, again.fid]).all()


def test_tasks_and_recipes_pick_the_tables_split_direction_and_size():
    facades = published.target_for_task("facades")
    assert (facades.data, facades.split, facades.direction, facades.load_size) == (
        "facades", "test", "BtoA", 256)
    assert published.target_for_task("maps2aerial").row.official_fid == 102.072
    recipe = published.target_for_recipe(ROOT / "recipes" / "aerial2maps.yaml")
    assert recipe.row.task == "aerial2maps" and recipe.load_size == 256 and recipe.split == "val"
    quick = published.target_for_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert quick.row is None and quick.split is None
    with pytest.raises(P2PError, match="facades, aerial2maps, maps2aerial, edges2shoes"):
        published.target_for_task("facade")


def test_run_prints_the_documented_json_and_the_table_beside_the_published_rows(
        cli, tmp_path, weights, monkeypatch):
    # scipy's sqrtm of a 2048x2048 rank-3 matrix takes tens of seconds on 2 cores; the distance
    # has its own tests, this one checks what reaches it and what is printed.
    distances = []
    monkeypatch.setattr(frechet, "frechet_distance",
                        lambda real, fake: distances.append((real, fake)) or 42.0)
    data = write_pairs(tmp_path / "facades", "test", 4)
    checkpoint = tmp_path / "g.pt"
    save_checkpoint(checkpoint, generator_state(make_generator(), "BtoA", 256))
    args = ["eval", "run", "--task", "facades", "--data", data, "--checkpoint", checkpoint,
            "--weights", weights, "--splits", "2"]
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    values = json.loads(r.out)
    assert list(values) == ["fid", "n_real", "n_fake", "is", "is_std", "n"]
    assert values["fid"] == 42.0 and values["n_real"] == values["n_fake"] == values["n"] == 4
    assert values["is"] >= 1.0
    real, fake = distances[0]
    assert real.mu.shape == fake.mu.shape == (2048,) and real.n == fake.n == 4
    table = cli(*args)
    assert table.exit_code == 0, table.stderr
    for text in ("facades: test split, 4 images, BtoA", "42.0000", "124.9773", "1.620",
                 "119.135", "1.650"):
        assert text in table.out
    assert "not comparable" in table.stderr
    assert not (tmp_path / "metrics.json").exists()  # a checkpoint file: nothing stored
    # A run directory keeps its scores for `p2p report`.
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir / "checkpoints" / "latest.pt",
                    generator_state(make_generator(), "BtoA", 256))
    args[args.index(checkpoint)] = run_dir
    assert cli(*args, "--json").exit_code == 0
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert stored["fid"] == 42.0 and stored["n_fake"] == 4 and stored["task"] == "facades"


def test_run_refuses_what_does_not_fit(cli, tmp_path):
    data = write_pairs(tmp_path / "facades", "test", 2)
    checkpoint = tmp_path / "g.pt"
    save_checkpoint(checkpoint, generator_state(make_generator(), "AtoB", 256))
    r = cli("eval", "run", "--task", "facades", "--data", data, "--checkpoint", checkpoint)
    assert r.exit_code == 2 and "translates AtoB" in r.stderr and "BtoA" in r.stderr
    r = cli("eval", "run", "--recipe", ROOT / "recipes" / "quickstart.yaml")
    assert r.exit_code == 2 and "--checkpoint" in r.stderr
    r = cli("eval", "run", "--checkpoint", checkpoint)
    assert r.exit_code == 2 and "exactly one" in r.stderr


@pytest.mark.parametrize("mode, size", [("resize_and_crop", 64), ("scale_width", 72),
                                        ("scale_width_and_crop", 72), ("none", 72)])
def test_a_recipes_target_is_sized_as_translate_and_validation_size_it(tmp_path, mode, size):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((ROOT / "recipes" / "quickstart.yaml").read_text().replace(
        "  crop_size: 64\n", f"  crop_size: 64\n  preprocess: {mode}\n"))
    target = published.target_for_recipe(recipe)
    expected = load_recipe(recipe).data.preprocessing().at_test_time()
    assert target.preprocess == expected and target.load_size == size
