"""tests/train: TrainConfig, the registries (losses, attacks, protocols), fit and its resumption, TORA, GRACE,
schedules, checkpoints."""

from markers import mark_modules

pytest_itemcollected = mark_modules(
    slow={"test_train", "test_train_options", "test_tora", "test_extending_train", "test_precision", "test_compile"}
)
