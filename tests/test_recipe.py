from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p.errors import P2PError
from p2p.recipe import Recipe, dump_recipe, load_recipe, recipe_from_dict

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  lod_size: 286\n")
    with pytest.raises(P2PError) as info:
        load_recipe(path)
    assert "data.lod_size" in str(info.value) and "load_size" in str(info.value)
    with pytest.raises(P2PError, match="did you mean 'train'"):
        recipe_from_dict({"trian": {"iters": 3}})


@pytest.mark.parametrize("values,fragment", [
    ({"data": {"direction": "AtoC"}}, "not one of AtoB, BtoA"),
    ({"train": {"iters": "many"}}, "expected int"),
    ({"train": {"iters": True}}, "expected int"),
    ({"data": {"crop_size": 300}}, "larger than data.load_size"),
    ({"data": {"load_size": 100, "crop_size": 100}}, "multiple of"),
    ({"model": "big"}, "expected a mapping"),
    ({"train": {"iters": 0}}, "must be positive"),
])
def test_invalid_values_are_named(values, fragment):
    with pytest.raises(P2PError, match=fragment):
        recipe_from_dict(values)


def test_overrides_are_parsed_as_yaml():
    recipe = recipe_from_dict({}, ["train.lr=1e-4", "data.flip=false", "name=x"])
    assert recipe.train.lr == 1e-4 and recipe.data.flip is False and recipe.name == "x"
    with pytest.raises(P2PError, match="section.key=value"):
        recipe_from_dict({}, ["train.lr"])
    with pytest.raises(P2PError, match="did you mean 'lr'"):
        recipe_from_dict({}, ["train.lrr=1"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(P2PError, match="no such recipe"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(P2PError, match="not valid YAML"):
        load_recipe(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(P2PError):
        load_recipe(unsafe)


# The published checkpoints' iteration counts (their file names; MMEditing 0.x's configs), not
# mmagic 1.x's rounded 220k / 190k.
@pytest.mark.parametrize("name,direction,iters,batch,load,flip", [
    ("facades", "BtoA", 80_000, 1, 286, True),
    ("aerial2maps", "AtoB", 219_200, 1, 286, True),
    ("maps2aerial", "BtoA", 219_200, 1, 286, True),
    ("edges2shoes", "AtoB", 186_840, 4, 256, False),
])
def test_published_recipes(name, direction, iters, batch, load, flip):
    r = load_recipe(RECIPES / f"{name}.yaml")
    assert (r.data.direction, r.train.iters, r.data.batch_size, r.data.load_size, r.data.flip) == (
        direction, iters, batch, load, flip)
    assert r.data.crop_size == 256 and r.model.num_downs == 8 and r.model.norm == "batch"
    assert r.model.dropout and r.model.d_layers == 3 and r.train.gan_loss == "vanilla"
    assert r.train.lambda_l1 == 100 and r.train.lr == 2e-4 and r.train.schedule == "constant"
    assert (r.train.beta1, r.train.beta2) == (0.5, 0.999)
    assert not r.train.amp  # fp32, as the published runs trained


def test_quickstart_uses_builtin_data():
    quickstart = load_recipe(RECIPES / "quickstart.yaml")
    assert quickstart.data.path == "synthetic"
    assert quickstart.train.amp  # the fast default (bf16 autocast on CUDA) stays


@given(st.integers(1, 10**6), st.floats(1e-6, 1.0), st.sampled_from(["AtoB", "BtoA"]))
def test_dump_and_load_round_trip(iters, lr, direction):
    recipe = recipe_from_dict({"train": {"iters": iters, "lr": lr},
                               "data": {"direction": direction}})
    import yaml

    assert recipe_from_dict(yaml.safe_load(dump_recipe(recipe))) == recipe
    assert isinstance(recipe, Recipe)
