"""ResNet generators: the model, recipes, training, and import of the official key layout.

The official ResnetGenerator is one flat ``nn.Sequential``. Its keys and shapes are written out
here from the published architecture (``official_keys``), and ``official_forward`` computes its
output straight from such a state_dict with torch.nn.functional, so the import is checked against
an implementation independent of p2p's module tree: same outputs, not only same keys.
"""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from p2p.errors import P2PError
from p2p.models import (
    GeneratorConfig,
    ResnetGenerator,
    UnetGenerator,
    build_generator,
    count_parameters,
    input_multiple,
)
from p2p.recipe import recipe_from_dict
from p2p.weights import checkpoint, load_generator, zoo


def resnet(blocks=2, ngf=4, norm="batch", dropout=False, in_channels=3, out_channels=3):
    return GeneratorConfig(in_channels=in_channels, out_channels=out_channels, ngf=ngf, norm=norm,
                           dropout=dropout, architecture="resnet", blocks=blocks)


# --- the official layout, from the architecture's description -----------------------------------

def official_keys(blocks=9, ngf=64, in_ch=3, out_ch=3, norm="batch",
                  dropout=False) -> dict[str, tuple]:
    """Every key and shape of an official ResnetGenerator state_dict.

    model: [pad, conv7, norm, relu] + 2 x [conv3 s2, norm, relu] + blocks + 2 x [convT3 s2, norm,
    relu] + [pad, conv7, tanh]; block.conv_block: [pad, conv3, norm, relu, (dropout), pad, conv3,
    norm]. Convs carry a bias only with instance norm, except the last one, which always does.
    """
    keys = {}
    bias = norm == "instance"

    def conv(at, out, inp, k, transposed=False, with_bias=bias):
        keys[f"{at}.weight"] = (inp, out, k, k) if transposed else (out, inp, k, k)
        if with_bias:
            keys[f"{at}.bias"] = (out,)

    def norm_layer(at, c):
        if norm == "batch":
            keys.update({f"{at}.weight": (c,), f"{at}.bias": (c,), f"{at}.running_mean": (c,),
                         f"{at}.running_var": (c,), f"{at}.num_batches_tracked": ()})

    conv("model.1", ngf, in_ch, 7)
    norm_layer("model.2", ngf)
    conv("model.4", ngf * 2, ngf, 3)
    norm_layer("model.5", ngf * 2)
    conv("model.7", ngf * 4, ngf * 2, 3)
    norm_layer("model.8", ngf * 4)
    second = 6 if dropout else 5
    for b in range(blocks):
        at = f"model.{10 + b}.conv_block"
        conv(f"{at}.1", ngf * 4, ngf * 4, 3)
        norm_layer(f"{at}.2", ngf * 4)
        conv(f"{at}.{second}", ngf * 4, ngf * 4, 3)
        norm_layer(f"{at}.{second + 1}", ngf * 4)
    up = 10 + blocks
    conv(f"model.{up}", ngf * 2, ngf * 4, 3, transposed=True)
    norm_layer(f"model.{up + 1}", ngf * 2)
    conv(f"model.{up + 3}", ngf, ngf * 2, 3, transposed=True)
    norm_layer(f"model.{up + 4}", ngf)
    conv(f"model.{up + 7}", out_ch, ngf, 7, with_bias=True)
    return keys


def random_official(seed=0, **shape) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, size in official_keys(**shape).items():
        if key.endswith("num_batches_tracked"):
            tensors[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            tensors[key] = torch.rand(size, generator=g) + 0.5
        else:
            tensors[key] = torch.randn(size, generator=g) * 0.1
    return tensors


def official_forward(t: dict[str, torch.Tensor], x: torch.Tensor, blocks: int,
                     dropout: bool = False) -> torch.Tensor:
    """The official ResnetGenerator in eval mode, computed from its state_dict."""

    def norm(at, y):
        if f"{at}.running_mean" in t:  # batch norm, running statistics
            return F.batch_norm(y, t[f"{at}.running_mean"], t[f"{at}.running_var"],
                                t[f"{at}.weight"], t[f"{at}.bias"], False)
        if "model.1.bias" in t:  # instance norm (the only norm that gives the convs a bias)
            return F.instance_norm(y)
        return y

    def conv(at, y, **kw):
        return F.conv2d(y, t[f"{at}.weight"], t.get(f"{at}.bias"), **kw)

    def up(at, y):
        return F.conv_transpose2d(y, t[f"{at}.weight"], t.get(f"{at}.bias"), stride=2,
                                  padding=1, output_padding=1)

    y = F.relu(norm("model.2", conv("model.1", F.pad(x, (3,) * 4, mode="reflect"))))
    y = F.relu(norm("model.5", conv("model.4", y, stride=2, padding=1)))
    y = F.relu(norm("model.8", conv("model.7", y, stride=2, padding=1)))
    second = 6 if dropout else 5
    for b in range(blocks):
        at = f"model.{10 + b}.conv_block"
        h = F.relu(norm(f"{at}.2", conv(f"{at}.1", F.pad(y, (1,) * 4, mode="reflect"))))
        y = y + norm(f"{at}.{second + 1}", conv(f"{at}.{second}",
                                                F.pad(h, (1,) * 4, mode="reflect")))
    u = 10 + blocks
    y = F.relu(norm(f"model.{u + 1}", up(f"model.{u}", y)))
    y = F.relu(norm(f"model.{u + 4}", up(f"model.{u + 3}", y)))
    return torch.tanh(conv(f"model.{u + 7}", F.pad(y, (3,) * 4, mode="reflect")))


# --- the model --------------------------------------------------------------------------------

def test_official_parameter_counts():
    # CycleGAN's resnet_9blocks with instance norm: the official code prints 11.378 M.
    assert count_parameters(ResnetGenerator(resnet(9, 64, "instance"))) == 11_378_179
    assert count_parameters(ResnetGenerator(resnet(9, 64, "batch"))) == 11_383_427
    assert count_parameters(ResnetGenerator(resnet(6, 64, "instance"))) == 7_837_699


@pytest.mark.parametrize("blocks,norm,dropout", [(9, "batch", True), (9, "instance", False),
                                                 (6, "none", True), (6, "batch", False)])
def test_full_size_keys_and_shapes_match_the_official_layout(blocks, norm, dropout):
    expected = official_keys(blocks=blocks, norm=norm, dropout=dropout)
    with torch.device("meta"):
        published = {k: torch.empty(s) for k, s in expected.items()}
        config = zoo.infer_config(published, "official", "test")
        ours = build_generator(config).state_dict()
    assert config == resnet(blocks, 64, norm, dropout)
    names = zoo.published_names(config, "official")
    assert len(names) == len(ours) == len(expected)
    assert set(names.values()) == set(expected)
    for key, theirs in names.items():
        assert tuple(ours[key].shape) == expected[theirs], key


def test_shapes_dropout_and_bias_rule():
    g = ResnetGenerator(resnet(blocks=3, ngf=4, dropout=True)).eval()
    y = g(torch.randn(2, 3, 36, 44) * 5)
    assert y.shape == (2, 3, 36, 44) and y.abs().max() <= 1
    assert all(hasattr(b.body, "dropout") for b in g.blocks)
    assert not any(hasattr(b.body, "dropout") for b in ResnetGenerator(resnet(3)).blocks)
    for norm, bias in (("batch", False), ("instance", True), ("none", False)):
        g = ResnetGenerator(resnet(norm=norm))
        convs = [g.stem.conv, *(b.conv for b in (*g.down, *g.up)),
                 *(c for b in g.blocks for c in (b.body.conv1, b.body.conv2))]
        assert all((c.bias is not None) == bias for c in convs), norm
        assert g.head.conv.bias is not None
    assert input_multiple(resnet()) == 4 and input_multiple(GeneratorConfig(num_downs=6)) == 64
    assert isinstance(build_generator(GeneratorConfig(num_downs=5, ngf=4)), UnetGenerator)


# --- import -------------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks,norm,dropout,channels", [
    (2, "batch", False, (3, 3)), (3, "instance", True, (1, 3)), (2, "none", False, (3, 1))])
def test_official_resnet_converts_to_the_same_function(blocks, norm, dropout, channels):
    shape = {"blocks": blocks, "ngf": 4, "in_ch": channels[0], "out_ch": channels[1],
             "norm": norm, "dropout": dropout}
    tensors = random_official(seed=blocks, **shape)
    generator = zoo.convert(zoo.generator_tensors(tensors, "official", "f"), "official", "f")
    assert generator.config == resnet(blocks, 4, norm, dropout, *channels)
    x = torch.rand(2, channels[0], 20, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(generator.eval()(x), official_forward(tensors, x, blocks,
                                                                         dropout))


def test_old_instance_norm_statistics_are_dropped_and_bgr_is_reversed():
    # Official files saved before PyTorch 0.4 carry instance-norm running statistics.
    tensors = random_official(blocks=2, ngf=4, norm="instance")
    stats = {f"model.{i}.{s}": torch.zeros(4 * m) for i, m in ((2, 1), (5, 2))
             for s in ("running_mean", "running_var")}
    generator = zoo.convert({**tensors, **stats}, "official", "f", bgr=True).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    flip = [2, 1, 0]
    with torch.no_grad():
        expected = official_forward(tensors, x[:, flip], 2)[:, flip]
        torch.testing.assert_close(generator(x), expected)


@pytest.mark.parametrize("change,message", [
    (lambda t: t.update({"model.99.weight": torch.zeros(1)}), "1 unexpected (model.99.weight)"),
    (lambda t: t.pop("model.11.conv_block.2.running_mean"), "1 missing"),
    (lambda t: t.update({"model.5.bias": torch.zeros(5)}), "has shape (5,)"),
    (lambda t: t.pop("model.19.weight"), "not an official pix2pix ResNet"),
    (lambda t: t.pop("model.11.conv_block.1.weight"), "1 missing"),
])
def test_resnet_conversion_is_strict(change, message):
    tensors = random_official(blocks=2, ngf=4)
    change(tensors)
    with pytest.raises(P2PError) as err:
        zoo.convert(tensors, "official", "f.pth")
    assert message in str(err.value) and "f.pth" in str(err.value)


def test_zoo_import_translate_and_export_a_resnet(cli, tmp_path):
    tensors = random_official(seed=4, blocks=2, ngf=4, norm="instance")
    file = tmp_path / "latest_net_G.pth"
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    file.write_bytes(buffer.getvalue())
    r = cli("zoo", "import", file, "--format", "official", "--name", "horse2zebra",
            "--image-size", "32")
    assert r.exit_code == 0, r.stderr
    generator, state = load_generator(r.out.strip())
    assert state["generator_config"]["architecture"] == "resnet"
    assert state["generator_config"]["blocks"] == 2

    Image.new("RGB", (44, 20), (90, 160, 30)).save(tmp_path / "in.png")
    r = cli("translate", "--task", "horse2zebra", tmp_path / "in.png", tmp_path / "out.png",
            "--keep-size", "--eval-mode", "--precision", "fp32")  # as the fp32 reference
    assert r.exit_code == 0, r.stderr
    out = torch.from_numpy(np.asarray(Image.open(tmp_path / "out.png")).copy())
    x = torch.tensor([90, 160, 30.]).view(1, 3, 1, 1).expand(1, 3, 20, 44) / 127.5 - 1
    with torch.no_grad():
        expected = ((official_forward(tensors, x, 2)[0].clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    assert (out.permute(2, 0, 1).int() - expected.int()).abs().max() <= 1

    r = cli("zoo", "export", "horse2zebra", tmp_path / "g.ts", "--format", "torchscript")
    assert r.exit_code == 0 and "checked with torchscript" in r.stderr


def test_checkpoints_without_an_architecture_load_as_unets(tmp_path):
    generator = UnetGenerator(GeneratorConfig(num_downs=5, ngf=4))
    state = checkpoint.generator_state(generator, "AtoB", 32)
    del state["generator_config"]["architecture"], state["generator_config"]["blocks"]
    checkpoint.save_checkpoint(tmp_path / "old.pt", state)
    loaded, _ = load_generator(tmp_path / "old.pt")
    assert isinstance(loaded, UnetGenerator) and loaded.config == generator.config


# --- recipes and training -----------------------------------------------------------------------

def test_recipe_generator_choice_and_validation():
    recipe = recipe_from_dict({"model": {"generator": "resnet_6blocks", "norm": "instance"}})
    assert recipe.generator_config() == resnet(6, 64, "instance", True)
    assert recipe_from_dict({}).generator_config().architecture == "unet"
    # num_downs does not apply to a ResNet, so a crop size of any multiple of 4 is fine.
    recipe_from_dict({"data": {"load_size": 300, "crop_size": 300},
                      "model": {"generator": "resnet_9blocks"}})
    with pytest.raises(P2PError, match="not a multiple of 4, the generator.s stride"):
        recipe_from_dict({"data": {"crop_size": 254}, "model": {"generator": "resnet_9blocks"}})
    with pytest.raises(P2PError, match="not one of unet, resnet_6blocks, resnet_9blocks"):
        recipe_from_dict({"model": {"generator": "resnet_8blocks"}})


def test_train_and_translate_a_resnet_run(cli, tmp_path):
    from p2p.data.synthetic import make_pair

    rng = np.random.default_rng(0)
    (tmp_path / "data" / "train").mkdir(parents=True)
    for i in range(4):
        make_pair(rng, size=32).save(tmp_path / "data" / "train" / f"{i}.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{path: {tmp_path / 'data'}, load_size: 36, crop_size: 32}}\n"
                      "model: {generator: resnet_6blocks, ngf: 4, ndf: 4}\n"
                      "train: {iters: 2, log_every: 1, sample_every: 2, checkpoint_every: 2}\n")
    r = cli("train", recipe, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    generator, _ = load_generator(tmp_path / "run")
    assert isinstance(generator, ResnetGenerator) and len(generator.blocks) == 6
    r = cli("translate", "-c", tmp_path / "run", tmp_path / "data" / "train" / "0.png",
            tmp_path / "out.png", "--paired", "--keep-size")
    assert r.exit_code == 0, r.stderr


def test_memory_footprint_counts_the_resnet_it_will_build():
    from p2p.training import footprint

    for generator in ("unet", "resnet_6blocks", "resnet_9blocks"):
        recipe = recipe_from_dict({"model": {"generator": generator, "ngf": 8}})
        with torch.device("meta"):
            model = build_generator(recipe.generator_config())
        convs = sum(p.numel() for p in model.parameters() if p.dim() == 4)
        assert footprint.generator_weights(recipe) == convs, generator
