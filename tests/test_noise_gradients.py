"""The torch half of the noise scale, on the real CPU backend: real losses, real gradients."""

from __future__ import annotations

import json

import pytest
import torch

from batchprof.backends import CpuBackend
from batchprof.cli.main import main
from batchprof.noise import NoiseOptions, NoiseScaleError, estimate_noise_scale
from batchprof.noise.gradients import SLICED, grad_sq_norm

from .noise_workloads import (
    constant_loss_workload,
    fixed_dataset_workload,
    linear_regression,
    rule_classifier,
    train,
    zero_gradient_workload,
)

CPU = torch.device("cpu")


def test_closed_form_truth_is_inside_the_interval_in_90_percent_of_trials():
    workload, truth = linear_regression(dim=32, sigma=1.0)  # truth = 65 samples
    for draws in (8, 16, None):  # measured: 0.935, 0.955, 0.93 of 200 trials (95% intervals)
        options = [NoiseOptions(draws=draws, small_batch=8, big_batch=128, seed=s)
                   for s in range(200)]
        results = [estimate_noise_scale(workload, options=o) for o in options]
        coverage = sum(r.estimate.contains(truth) for r in results) / len(results)
        assert coverage >= 0.90, (draws, coverage)
        assert all(r.small_batch == 8 and r.big_batch == 128 for r in results)


def test_interval_shrinks_with_more_draws_on_real_gradients():
    workload, truth = linear_regression(dim=32, sigma=1.0)

    def width(draws: int, seed: int) -> float:
        e = estimate_noise_scale(workload, options=NoiseOptions(
            draws=draws, small_batch=8, big_batch=128, seed=seed)).estimate
        return float("inf") if e.interval_width_samples is None else e.interval_width_samples

    few = sorted(width(6, s) for s in range(9))[4]
    many = sorted(width(48, s) for s in range(9))[4]
    assert many < 0.6 * few, (few, many)


def test_model_weights_mode_grads_and_rng_are_left_as_they_were():
    workload, _ = linear_regression(dim=8)
    model = workload.model_fn()
    model.eval()
    before = model.weight.detach().clone()
    model.weight.grad = torch.full_like(model.weight, 7.0)
    rng = torch.get_rng_state()
    result = estimate_noise_scale(workload, model=model, options=NoiseOptions(draws=3))
    assert torch.equal(model.weight, before) and not model.training
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 7.0))
    assert torch.equal(torch.get_rng_state(), rng)
    assert any("weights of the model passed in" in c for c in result.caveats)


def test_accumulated_big_batch_has_the_same_gradient():
    workload, _ = linear_regression(dim=16)
    model = workload.model_fn()
    params = list(model.parameters())
    batch = workload.batch_fn(40, CPU)
    whole = grad_sq_norm(model, params, workload.loss_fn, batch, 40, CpuBackend(None))
    pieces = grad_sq_norm(model, params, workload.loss_fn, batch, 40, CpuBackend(None), micro=16)
    assert pieces == pytest.approx(whole, rel=1e-5)


def test_a_batch_fn_seeded_by_size_still_gives_independent_draws():
    workload, truth = linear_regression(dim=32, seeded_by_size=True)
    result = estimate_noise_scale(workload, options=NoiseOptions(draws=8, small_batch=8,
                                                                 big_batch=128))
    assert result.draw_source == SLICED
    assert len({d.small_grad_sq_norm for d in result.estimate.draws}) == 8
    assert 0.3 * truth < result.noise_scale_samples < 3 * truth


def test_builtin_workloads_say_their_figure_is_only_a_test():
    result = estimate_noise_scale("cnn", options=NoiseOptions(draws=2, small_batch=1,
                                                              big_batch=2))
    assert result.draw_source == SLICED
    assert any("meaningless except as a test" in c for c in result.caveats)
    assert any("BatchNorm" in c for c in result.caveats)


@pytest.mark.parametrize("factory, message", [
    (constant_loss_workload, "does not depend on the batch"),
    (zero_gradient_workload, "gradient is zero"),
    (fixed_dataset_workload, "not be independent"),
])
def test_workloads_without_gradient_noise_get_a_clear_error(factory, message):
    with pytest.raises(NoiseScaleError, match=message):
        estimate_noise_scale(factory(), options=NoiseOptions(draws=3, big_batch=16))


def test_a_big_batch_over_the_budget_says_what_to_change():
    workload, _ = linear_regression(dim=64)
    with pytest.raises(NoiseScaleError, match="ran out of memory.*--micro-batch"):
        estimate_noise_scale(workload, memory_limit="1MiB",
                             options=NoiseOptions(draws=2, big_batch=8192))


def test_noise_scale_grows_as_a_real_model_trains():
    # A classifier on a learnable rule with 20% label noise: as it learns, |G|² falls while the
    # label noise keeps tr(Σ), so B_simple grows (McCandlish et al. 2018, section 3).
    for seed in (0, 1):
        workload = rule_classifier(seed=seed)
        torch.manual_seed(seed)
        model = workload.model_fn()
        options = NoiseOptions(draws=16, small_batch=32, big_batch=512, seed=seed)
        estimates, done = [], 0
        for steps in (0, 100, 300):
            train(workload, model, steps - done)
            done = steps
            estimates.append(estimate_noise_scale(workload, model=model,
                                                  options=options).estimate)
        start, middle, end = estimates
        assert start.interval_high_samples < middle.interval_low_samples
        assert start.interval_high_samples < end.interval_low_samples
        assert start.noise_scale_samples < middle.noise_scale_samples < end.noise_scale_samples
        assert end.noise_scale_samples > 5 * start.noise_scale_samples


# ---- CLI -----------------------------------------------------------------------------------
LINREG = "tests.noise_workloads:linreg"


def test_cli_prints_the_estimate_interval_caveats_and_lr_hint(capsys):
    code = main(["noise", LINREG, "--draws", "6", "--big-batch", "128", "--small-batch", "8",
                 "--reference-batch", "32", "--reference-lr", "0.1", "--target-batch", "64"])
    out = capsys.readouterr().out
    assert code == 0
    assert "batches above ~" in out and "95% interval" in out and "batch 8 and 128" in out
    assert "the estimate holds at the weights model_fn builds" in out
    assert "linear rule for SGD" in out and "about 0.2" in out and "warm-up" in out


def test_cli_json(capsys):
    code = main(["noise", LINREG, "--draws", "4", "--big-batch", "128", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(captured.out)
    assert data["big_batch"] == 128 and data["small_batch"] == 16
    assert "--big-batch" in data["big_batch_source"]
    assert len(data["estimate"]["draws"]) == 4 and data["estimate"]["noise_scale_samples"] > 0


@pytest.mark.parametrize("args, message", [
    (["tests.noise_workloads:constant_loss_workload"], "does not depend on the batch"),
    ([LINREG, "--big-batch", "1"], "too small to draw two batch sizes"),
    ([LINREG, "--draws", "1"], "--draws must be an integer >= 2"),
    ([LINREG, "--reference-batch", "32"], "together"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code = main(["noise", *args, "--draws" if "--draws" not in args else "--seed", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.gpu
def test_noise_scale_on_cuda():
    workload, truth = linear_regression(dim=32, sigma=1.0)
    result = estimate_noise_scale(workload, device="cuda", options=NoiseOptions(
        draws=16, small_batch=8, big_batch=128))
    assert result.device.startswith("cuda")
    assert 0.3 * truth < result.noise_scale_samples < 3 * truth


def test_the_backend_it_builds_is_closed_and_a_given_one_is_not(monkeypatch):
    workload, _ = linear_regression(dim=8)
    closed = []

    class Recording(CpuBackend):
        def close(self) -> None:
            closed.append(self)
            super().close()

    monkeypatch.setattr("batchprof.noise.gradients.make_backend",
                        lambda device, limit: Recording(limit))
    estimate_noise_scale(workload, options=NoiseOptions(draws=3))
    assert len(closed) == 1
    given = Recording(None)
    estimate_noise_scale(workload, backend=given, options=NoiseOptions(draws=3))
    assert closed == [closed[0]]  # the caller's stays open
