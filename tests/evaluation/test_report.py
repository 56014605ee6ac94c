"""training_report: each warning fires on the condition it names, and only then."""

import pytest

from lumin_inferno import TrainingWarning, training_report


def test_healthy_model_has_no_warnings():
    assert training_report("m", 15.0, baseline_sigma=18.0, occupancy=[0.1] * 10,
                           metric_history=[20, 17, 16, 15.5, 15.2, 15.1, 15.3, 15.2, 15.25, 15.3]) == []


def test_no_better_than_cross_entropy_names_the_model():
    (msg,) = training_report("INFERNO 4, model 1", 18.0, baseline_sigma=18.0)
    assert "INFERNO 4, model 1" in msg and "cross-entropy" in msg and "18" in msg


def test_empty_bins_are_counted():
    (msg,) = training_report("m", 1.0, occupancy=[0.5, 0.0, 0.5, 0.0])
    assert "2 of 4 bins" in msg


def test_still_falling_at_the_last_epoch_is_not_converged():
    falling = [20, 18, 17, 16.5, 16.0, 15.6, 15.3, 15.0, 14.8]
    (msg,) = training_report("m", 1.0, metric_history=falling)
    assert "not converged" in msg
    # a plateau whose best epoch happens to be the last one, by less than the threshold, is converged
    assert training_report("m", 1.0, metric_history=[20, 16, 15.01, 15.005, 15.003, 15.0]) == []
    # early stopping past the minimum: converged
    assert training_report("m", 1.0, metric_history=falling[:-2] + [15.2, 15.4, 15.5]) == []


def test_emit_warns():
    with pytest.warns(TrainingWarning, match="no better"):
        training_report("m", 2.0, baseline_sigma=1.0, emit=True)
