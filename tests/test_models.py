import pytest
import torch
from torch import nn

from p2p.models import (
    DiscriminatorConfig,
    GeneratorConfig,
    PatchDiscriminator,
    UnetGenerator,
    count_parameters,
    init_weights,
)


def test_published_parameter_counts():
    # The figures of the official unet_256 and basic (70x70) PatchGAN with batch norm.
    assert count_parameters(UnetGenerator(GeneratorConfig())) == 54_413_955
    assert count_parameters(PatchDiscriminator(DiscriminatorConfig())) == 2_768_705


def test_unet_shapes_and_tanh_range():
    g = UnetGenerator(GeneratorConfig(num_downs=5, ngf=8)).eval()
    y = g(torch.randn(2, 3, 32, 32) * 5)
    assert y.shape == (2, 3, 32, 32)
    assert y.abs().max() <= 1


def test_unet_dropout_only_in_three_512_levels_next_to_innermost():
    g = UnetGenerator(GeneratorConfig())
    with_dropout = [i for i, block in enumerate(g.up) if hasattr(block, "dropout")]
    assert with_dropout == [4, 5, 6]
    assert not any(hasattr(b, "dropout") for b in UnetGenerator(
        GeneratorConfig(dropout=False)).up)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_conv_bias_only_without_batch_norm(norm):
    g = UnetGenerator(GeneratorConfig(num_downs=6, ngf=8, norm=norm))
    convs = [b.conv for b in (*g.down, *g.up)]
    outermost_up = g.up[0].conv
    for conv in convs:
        expect_bias = conv is outermost_up or norm != "batch"
        assert (conv.bias is not None) == expect_bias
    assert not hasattr(g.down[0], "norm") and not hasattr(g.down[-1], "norm")


def test_skip_connection_order_matches_the_reference():
    # up[i] reads cat([skip, upsampled]): zeroing the second half of up[1]'s input weights makes the
    # output independent of everything below level 1 except the skip.
    g = UnetGenerator(GeneratorConfig(num_downs=5, ngf=4, norm="none", dropout=False)).eval()
    skip_channels = g.down[1].conv.out_channels
    with torch.no_grad():
        g.up[1].conv.weight[skip_channels:] = 0
        x = torch.randn(1, 3, 32, 32)
        before = g(x)
        g.down[4].conv.weight.add_(1.0)  # innermost weights change
        after = g(x)
    torch.testing.assert_close(before, after)


@pytest.mark.parametrize("n_layers,patches", [(3, 30), (1, 126), (0, 256)])
def test_discriminator_variants_patch_grid_on_256(n_layers, patches):
    d = PatchDiscriminator(DiscriminatorConfig(n_layers=n_layers, ndf=8))
    assert d(torch.randn(1, 6, 256, 256)).shape == (1, 1, patches, patches)


def test_init_is_seedable_and_follows_the_paper():
    torch.manual_seed(3)
    a = init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=16)))
    torch.manual_seed(3)
    b = init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=16)))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    conv_weights = torch.cat([m.weight.flatten() for m in a.modules()
                              if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(conv_weights.std().item() - 0.02) < 0.002
    bn_weights = torch.cat([m.weight for m in a.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn_weights.mean().item() - 1.0) < 0.01
