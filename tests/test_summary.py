"""`bnnx summary`: parameter, storage and MAC accounting checked against hand computations."""

from __future__ import annotations

import json
import re

import pytest

from bnnx.errors import ConfigError
from bnnx.models import ModelConfig
from bnnx.summary import dataset_shape, summarize


def small_mlp(**changes) -> ModelConfig:
    return ModelConfig(name="mlp", options={"hidden": (8, 8)}, **changes)


def test_small_mlp_by_hand():
    # digits 8×8 → dense 64×8 (first, real) → BN → dense 8×8 (hidden, binary) → BN → dense 8×10 (last, real) → BN
    first, hidden, last = 64 * 8, 8 * 8, 8 * 10
    batch_norms = 2 * (8 + 8 + 10)  # scale and bias each
    total = first + hidden + last + batch_norms
    packed = 1 * hidden + 32 * (first + last + batch_norms)

    s = summarize(small_mlp(), "digits")
    t = s.totals()
    assert [layer.precision for layer in s.layers] == ["real", "binary", "real"]
    assert (t["params"], t["binary_params"], t["ternary_params"], t["real_params"]) == (708, 64, 0, 644)
    assert total == 708 and s.other_params == batch_norms
    assert t["packed_bits"] == packed == 20_672
    assert t["float32_bits"] == 32 * total
    assert t["packed_kib"] == pytest.approx(packed / 8 / 1024)
    assert t["compression_ratio"] == pytest.approx(32 * total / packed)
    # MACs per example = kernel sizes for dense layers; the hidden one has binary weights and inputs
    assert (t["macs"], t["binary_macs"], t["xnor_macs"], t["real_macs"]) == (656, 64, 64, 592)


def test_ternary_weights_take_two_bits_and_mean_abs_scales_are_stored():
    s = summarize(small_mlp(kernel_quantizer="ternary", scaling="mean_abs", binary_activations=False), "digits")
    hidden = s.layers[1]
    assert hidden.precision == "ternary" and hidden.mac_kind == "binary"
    assert hidden.bits == 2 * 64 + 32 * 8  # two bit-planes + one float32 scale per output channel
    assert s.totals()["ternary_params"] == 64 and s.totals()["xnor_macs"] == 0


def test_full_precision_twin_compresses_nothing():
    s = summarize(small_mlp(fp=True), "digits")
    assert s.totals()["binary_params"] == 0 and s.compression == 1.0


def resnet18_by_hand(num_classes: int = 1000) -> tuple[int, int]:
    """(binary, real) parameters of ResNet-18 with the first conv, the classifier and shortcuts real."""
    conv3 = lambda cin, cout: 3 * 3 * cin * cout  # noqa: E731
    binary = 4 * conv3(64, 64) + sum(conv3(c // 2, c) + 3 * conv3(c, c) for c in (128, 256, 512))
    stem = 7 * 7 * 3 * 64
    shortcuts = 64 * 128 + 128 * 256 + 256 * 512
    classifier = 512 * num_classes + num_classes
    batch_norm_channels = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512
    return binary, stem + shortcuts + classifier + 2 * batch_norm_channels


def test_resnet18_ratio_printed_by_the_cli_equals_the_hand_computation(run_cli, tmp_path):
    binary, real = resnet18_by_hand()
    assert binary + real == 11_689_512  # torchvision's count
    ratio = 32 * (binary + real) / (binary + 32 * real)

    out = tmp_path / "summary.json"
    code, text = run_cli("summary", "model=resnet18", "dataset=imagenet2012", "--json", str(out))
    assert code == 0, text
    printed = float(re.search(r"compression ratio: ([0-9.]+)x", text).group(1))
    assert printed == round(ratio, 4)
    total = json.loads(out.read_text())["total"]
    assert (total["binary_params"], total["real_params"]) == (binary, real)
    assert total["compression_ratio"] == pytest.approx(ratio, rel=1e-12)


@pytest.mark.parametrize("name, bops", [("birealnet18", 1.68e9), ("reactnet_a", 4.82e9)])
def test_xnor_macs_equal_the_papers_bops(name, bops):
    """Bi-Real Net (Liu et al. 2018, Table 4) and ReActNet (Liu et al. 2020, Table 1) report BOPs."""
    s = summarize(ModelConfig(name=name), "imagenet2012")
    assert round(s.totals()["xnor_macs"] / 1e9, 2) == bops / 1e9


def test_known_shapes_need_no_data():
    assert dataset_shape("cifar100") == ((32, 32, 3), 100)
    assert dataset_shape("imagenet2012", image_size=160) == ((160, 160, 3), 1000)
    with pytest.raises(ConfigError):
        dataset_shape("svhn")


def test_cli_errors_are_one_line(run_cli):
    code, text = run_cli("summary", "model=nope")
    assert code == 2 and text.strip().count("\n") == 0 and "unknown model 'nope'" in text
