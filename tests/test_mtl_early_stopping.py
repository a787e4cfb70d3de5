"""Early stopping on scripted validation sequences, and which checkpoints are kept."""

import pytest

from ftlab.mtl.early_stopping import (
    EarlyStopping,
    kept_checkpoints,
    save_epochs,
    select,
    validation_epochs,
)


def run(values, schedule=None, **kw):
    """Feed the values at the seed's validation epochs (or `schedule`) until the rule stops;
    returns (stop epoch or None, the rule). Patience in validations unless told (the tests
    below written for that unit); the epochs unit has its own tests."""
    kw = {"min_epochs": 10, "patience": 3, "min_delta": 0.001, "mode": "max",
          "patience_unit": "validations", **kw}  # fmt: skip
    es = EarlyStopping(**kw)
    for epoch, value in zip(schedule or SEED_SCHEDULE, values, strict=False):
        if es.update(epoch, value):
            return epoch, es
    return None, es


SEED_SCHEDULE = validation_epochs(30, 3, before_training=True)


def test_schedules_of_seed_000():
    assert SEED_SCHEDULE == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert save_epochs(30, 5) == [5, 10, 15, 20, 25, 30]
    assert save_epochs(12, 5) == [5, 10, 12]


def test_plateau_stops_after_patience_validations():
    values = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    stop, es = run(values)
    # best at epoch 6; 9, 12, 15 do not improve -> stop at 15
    assert stop == 15 and es.best_epoch == 6 and es.wait == 3


def test_patience_in_epochs_is_the_default_and_the_seeds_reading():
    """Seed 000 (validation every 3 epochs, min 10, patience 3 epochs), by hand."""
    assert EarlyStopping(10, 3, 0.001, "max").patience_unit == "epochs"
    plateau = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    # best 0.3 at epoch 6; epoch 9 is 3 epochs later but < min_epochs 10; epoch 12: stop
    stop, es = run(plateau, patience_unit="epochs")
    assert stop == 12 and es.best_epoch == 6 and es.wait == 2
    # the validations unit: 9, 12, 15 without improvement -> 15
    assert run(plateau)[0] == 15
    # rising to epoch 12, flat at 15: 15 - 12 = 3 -> stop at 15 (validations: 21)
    rising = [0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    assert run(rising, patience_unit="epochs")[0] == 15 and run(rising)[0] == 21
    # min_epochs 0: the first validation without improvement (epoch 3) already stops
    assert run([0.5, 0.4, 0.4], patience_unit="epochs", min_epochs=0)[0] == 3
    # patience 4 epochs with validation every 3: 3 epochs are not enough, 6 are
    stop, es = run([0.5, 0.4, 0.4], patience_unit="epochs", min_epochs=0, patience=4)
    assert stop == 6 and es.best_epoch == 0


def test_the_units_agree_when_validation_runs_every_epoch():
    every1 = validation_epochs(30, 1, before_training=False)
    every2 = validation_epochs(30, 2, before_training=False)
    values = [0.1 * k for k in range(1, 11)] + [0.95] * 20  # best (1.0) at epoch 10
    for unit in ("epochs", "validations"):
        assert run(values, every1, patience_unit=unit)[0] == 13
    # every 2 epochs: best at epoch 20 (the 10th validation); epochs: 22, 24 -> 24 - 20 >= 3;
    # validations: 22, 24, 26 -> 26
    assert run(values, every2, patience_unit="epochs")[0] == 24
    assert run(values, every2, patience_unit="validations")[0] == 26
    with pytest.raises(ValueError, match="mtl.early_stopping.patience_unit must be one of"):
        EarlyStopping(10, 3, 0.001, "max", patience_unit="steps")


def test_min_epochs_blocks_an_early_stop():
    values = [0.5, 0.4, 0.4, 0.4, 0.4, 0.4]
    stop, es = run(values)
    # wait reaches 3 at epoch 9 (< min_epochs 10); the stop comes at the next validation
    assert stop == 12 and es.best_epoch == 0 and es.wait == 4
    stop, _ = run(values, min_epochs=0)
    assert stop == 9


def test_min_delta_gains_do_not_count():
    # +0.0001 per validation stays within min_delta 0.001 of the best: no improvement
    values = [0.5 + 0.0001 * k for k in range(11)]
    stop, es = run(values)
    assert stop == 12 and es.best == 0.5 and es.wait == 4
    # +0.002 improves every time: never stops
    stop, es = run([0.5 + 0.002 * k for k in range(11)])
    assert stop is None and es.best_epoch == 30
    # a gain of exactly min_delta is not an improvement (strict inequality, as Keras);
    # binary-exact numbers so that no rounding decides
    stop, es = run([0.5, 0.75, 0.75, 0.75, 0.75], min_delta=0.25)
    assert stop == 12 and es.best == 0.5


def test_mode_min_for_a_loss():
    values = [2.0, 1.5, 1.2, 1.3, 1.25, 1.21, 1.0]
    stop, es = run(values, mode="min")
    assert stop == 15 and es.best == 1.2 and es.best_epoch == 6
    stop, es = run(values, mode="max")
    assert stop == 12 and es.best_epoch == 0  # the same sequence read as a reward


def test_disabled_never_stops_but_tracks_the_best():
    stop, es = run([0.9] + [0.1] * 10, enabled=False)
    assert stop is None and es.best_epoch == 0 and es.wait == 10


def test_state_round_trip():
    _, es = run([0.1, 0.3, 0.2, 0.2])
    again = EarlyStopping.from_state(es.state_dict())
    assert again == es and again.update(12, 0.2) == es.update(12, 0.2)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="mode must be one of"):
        EarlyStopping(10, 3, 0.001, "maximum")
    with pytest.raises(ValueError, match="patience >= 1"):
        EarlyStopping(10, 0, 0.001, "max")


def test_kept_checkpoints_keep_the_newest_and_the_selected():
    values = {5: 0.2, 10: 0.6, 15: 0.5, 20: 0.4, 25: 0.45}
    assert kept_checkpoints(list(values), values, keep_last=10, mode="max") == (
        [5, 10, 15, 20, 25],
        10,
    )
    assert kept_checkpoints(list(values), values, keep_last=2, mode="max") == ([10, 20, 25], 10)
    assert kept_checkpoints(list(values), values, keep_last=2, mode="min") == ([5, 20, 25], 5)
    assert select({5: 0.5, 10: 0.5}, "max") == 5  # ties: the earliest


def test_a_rule_firing_at_the_last_epoch_is_not_an_early_stop():
    from ftlab.mtl.manifest import stop_reason

    es = EarlyStopping(0, 1, 0.0, "max")
    assert not es.update(9, 0.5)
    assert es.update(10, 0.4)  # the rule fires at epoch 10 ...
    assert stop_reason(es, max_epochs=10) == "max_epochs"  # ... the last epoch anyway
    assert stop_reason(es, max_epochs=12) == "early_stopping"
    assert stop_reason(EarlyStopping(0, 1, 0.0, "max"), max_epochs=10) == "max_epochs"
