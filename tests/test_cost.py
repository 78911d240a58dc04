"""FLOP counts: torch's counter against products counted by hand, and a formula for every registered measure."""

import math

import numpy as np
import pytest
import torch

from neucrab import InputError, flops, measures
from neucrab.cost import count_torch_flops, forward_flops, gemm, measure_cost, mi_gemm_flops
from neucrab.measures import REGISTRY, ialpha, mutual_information
from neucrab.measures.registry import MODEL, MeasureInfo, Needs, default_measures

# What a fine-tuning measure needs besides the shapes: FLOPs of one sample's forward pass.
EXTRA = {name: {"forward": 1e9} for name, info in REGISTRY.items() if info.needs == MODEL}


def test_one_matrix_product_by_hand():
    a, b = torch.ones(3, 4), torch.ones(4, 5)
    # 3 x 5 outputs, each 4 multiplies and 4 adds: 2 * 3 * 4 * 5 = 120.
    assert gemm(3, 4, 5) == 120
    assert count_torch_flops(torch.matmul, a, b) == 120


def test_linear_layer_forward_is_2_batch_in_out():
    layer = torch.nn.Linear(10, 7)
    assert forward_flops(layer, torch.ones(6, 10)) == 2 * 6 * 10 * 7
    assert layer.training  # the module's mode is left as found


def test_convolution_forward_by_hand():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1).eval()
    # 2 images x 8 output channels x 5 x 5 positions, each a 3 x 3 x 3 dot product: 2 * 2*8*25 * 27 FLOPs.
    assert forward_flops(conv, torch.ones(2, 3, 5, 5)) == 2 * (2 * 8 * 25) * 27
    assert not conv.training


def test_formulas_by_hand():
    # LEEP, N = 10 samples, S = 5 sources, C = 2 classes: 6 N S + 2 C S + 2 N = 300 + 20 + 20.
    assert measure_cost("leep", 10, 4, 2, sources=5) == 340
    # H-score, N = 10, D = 4, C = 2 (D <= N): centring and class means 2 N D = 80, scatter 2 D N D = 320,
    # eigh 9 D^3 = 576, class means into the eigenbasis 2 C D D = 64, the trace 3 C D = 24.
    assert measure_cost("hscore", 10, 4, 2) == 80 + 320 + 576 + 64 + 24


@pytest.mark.parametrize("pca", [False, True])
def test_mi_critic_products_match_torch_flop_counter(monkeypatch, pca):
    # With early stopping switched off training runs its full budget, and the formula's products of the
    # critic (training steps, early-stopping checks, held-out evaluation) must equal what torch counts.
    monkeypatch.setattr(ialpha, "PATIENCE", 10**9)
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(150, 7)) @ rng.normal(size=(7, 7)), rng.integers(0, 3, size=150)
    dims = ialpha._reduce(features, 0.8).shape[1] if pca else 7
    counted = count_torch_flops(mutual_information, features, labels, pca=pca, steps=30)
    assert counted == mi_gemm_flops(150, dims, 3, steps=30)


def test_mi_cost_counts_its_products():
    # The measure's total includes the critic's products and more (elementwise work, Adam, scaling).
    assert measure_cost("mi", 150, 7, 3, steps=30) > mi_gemm_flops(150, 7, 3, steps=30)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_measure_has_a_cost_formula(name):
    # Fails for a newly registered measure until neucrab/cost.py has its formula.
    cost = measure_cost(name, 1000, 64, 10, sources=100, test_n=500, **EXTRA.get(name, {}))
    assert math.isfinite(cost) and cost > 0


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_costs_grow_with_the_number_of_samples(name):
    extra = EXTRA.get(name, {})
    small = measure_cost(name, 500, 64, 10, sources=100, **extra)
    large = measure_cost(name, 1000, 64, 10, sources=100, **extra)
    assert large > small


def test_finetuning_cost_by_hand():
    # 64 samples in batches of 32: 2 steps = 64 samples, 3 forward-equivalents each (forward + backward),
    # plus 10 test samples; per sample the network (1000) and the new head (2 D C = 2 * 4 * 2 = 16).
    assert measure_cost("finetune_1ep", 64, 4, 2, test_n=10, forward=1000) == 3 * 64 * 1016 + 10 * 1016


def test_counts_given_by_the_run_replace_the_caps():
    capped = measure_cost("nleep", 1000, 64, 10)
    assert measure_cost("nleep", 1000, 64, 10, iterations=10, reduced_dims=20) < capped
    assert measure_cost("logme", 1000, 64, 10, iterations=50) < measure_cost("logme", 1000, 64, 10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: measure_cost("nope", 10, 4, 2), "unknown measure"),
        (lambda: measure_cost("leep", 10, 4, 2), "sources"),
        (lambda: measure_cost("hscore", 0, 4, 2), "n: expected a positive integer"),
        (lambda: measure_cost("hscore", 10, 4, 2, iterations=3), "unexpected keyword"),
        (lambda: measure_cost("finetune_5ep", 10, 4, 2), "forward"),
    ],
)
def test_bad_requests_are_input_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_a_measure_without_formula_is_an_input_error(monkeypatch):
    info = MeasureInfo("uncounted", lambda features, labels: 0.0, Needs.FEATURES, "a test measure", "none")
    monkeypatch.setitem(REGISTRY, "uncounted", info)
    with pytest.raises(InputError, match="no cost formula for measure 'uncounted'"):
        measure_cost("uncounted", 10, 4, 2)


def test_the_formula_is_the_one_its_register_carries(monkeypatch):
    info = MeasureInfo("counted", lambda features, labels: 0.0, Needs.FEATURES, "a test measure", "none",
                       cost=lambda n, d, c, sources, test_n: flops.gemm(n, d, c))
    monkeypatch.setitem(REGISTRY, "counted", info)
    assert measure_cost("counted", 10, 4, 2) == 2 * 10 * 4 * 2


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "10"])
def test_shapes_are_checked_with_the_shared_rule(value):
    with pytest.raises(InputError, match=r"^d: expected a positive integer, got "):
        measure_cost("hscore", 10, value, 2)


# ------------------------------------------------------------------ what else @register carries
def test_default_positions_give_ranks_default_set():
    expected = ["nleep", "logme", "shrinkage_hscore", "transrate", "gbc", "sfda", "knn", "leep", "nce"]
    assert default_measures() == expected
    assert [REGISTRY[name].default for name in expected] == list(range(9))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_measure_is_neucrab_measures_name(name):
    assert getattr(measures, name) is REGISTRY[name].function
    assert name in dir(measures)


def test_a_measure_registered_later_is_an_attribute_too(monkeypatch):
    function = lambda features, labels: 1.0  # noqa: E731
    monkeypatch.setitem(REGISTRY, "from_a_plugin", MeasureInfo("from_a_plugin", function, Needs.FEATURES, "x", "y"))
    assert measures.from_a_plugin is function and "from_a_plugin" in dir(measures)
    with pytest.raises(AttributeError):
        measures.no_such_measure  # noqa: B018
