"""TrainConfig.compile: the training and validation passes (the training attack included) run a torch.compile of
the model and give the eager run's first optimizer steps; the checkpoint holds the eager module's weights; the
field stays out of run_id at its default.

torch.compile runs with backend "aot_eager" here: Dynamo's capture and AOTAutograd's forward/backward graphs
(what `compile` changes about the run: graph breaks, train / eval mode guards, the attack's input gradient), without Inductor's C++ code generation, which took over three minutes for this MLP's graphs on 2 shared
cores. Tolerance: atol 1e-6 on weights of order 0.1 (aot_eager measured bit-identical; the margin is for
reassociated float32 sums).
"""

from __future__ import annotations

import mlp
import pytest
import torch

from rft_fast.train import TrainConfig, checkpoint, fit, loop

ATOL = 1e-6


@pytest.fixture(scope="module", autouse=True)
def _mlp_backbone():
    with mlp.registered():
        yield


def config(**kw) -> TrainConfig:
    base = dict(
        backbone=mlp.NAME,
        dataset="digits",
        random_init=True,
        protocol="FFT-5",
        loss="classic_at",
        batch_size=32,
        effective_batch=32,
        lr_backbone=1e-2,
        lr_head=1e-2,
        cosine=False,
        epochs=1,
        image_size=8,
        device="cpu",
        workers=0,
        val_samples=32,
        val_steps=1,
        attack_steps=2,
        max_batches=2,  # 2 optimizer steps
        amp="none",
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_compiled_run_gives_the_eager_runs_first_steps(tmp_path, monkeypatch):
    calls = []
    real = torch.compile

    def compile_cheaply(model, **kw):
        calls.append(model)
        return real(model, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_cheaply)
    torch._dynamo.reset()
    eager = fit(config())
    compiled = fit(config(compile=True, out_dir=str(tmp_path)))
    assert len(calls) == 1 and isinstance(calls[0], torch.nn.Module)  # one compile, of the model the run saves
    assert compiled.metrics[0]["optimizer_steps"] == eager.metrics[0]["optimizer_steps"] == 2
    for key, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[key], value, atol=ATOL, rtol=0)
    for name in ("train_loss", "val_loss", "val_clean_acc", "val_pgd_acc"):
        assert compiled.metrics[0][name] == pytest.approx(eager.metrics[0][name], abs=1e-5)
    saved = checkpoint.load(tmp_path / loop.CHECKPOINT)["model"]
    assert saved.keys() == eager.model.state_dict().keys()  # the eager module's names, no "_orig_mod."
    assert all(torch.equal(saved[k], v) for k, v in compiled.model.state_dict().items())


def test_compile_stays_out_of_run_id_at_its_default():
    assert "compile" not in config().hparams() and config().run_id() == config(compile=False).run_id()
    assert config(compile=True).hparams()["compile"] is True and config(compile=True).run_id() != config().run_id()
    with pytest.raises(ValueError, match="compile must be true or false"):
        config(compile="yes")
