"""Integrations (issue 16): a Workload from (model, data, loss), Lightning, the HF Trainer.

The claim each test checks: the batch size an integration sets equals what
``batchprof.profile`` finds for the same model, data shapes and budget written by hand as a
Workload. Small models, small CPU budgets, ``knee=False`` (the recommendation is then the
largest batch that fits) and one timed step per probe keep them to seconds each.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

import batchprof
from batchprof import Workload
from batchprof.errors import WorkloadError
from batchprof.integrations import IntegrationError, MissingDependencyError
from batchprof.integrations._deps import require
from batchprof.integrations.data import to_device, workload_from_data
from batchprof.probe import TimingPolicy

from .helpers import tiny_workload

WIDTH, CLASSES, BUDGET = 32, 4, "256KiB"
FAST = {"knee": False, "timing": TimingPolicy(timed_steps=1, max_timed_steps=1)}


def mlp() -> nn.Module:  # the same layers as tests.helpers.tiny_workload(WIDTH)
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, CLASSES))


def features(n: int = 50) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, WIDTH, generator=g),
                         torch.randint(0, CLASSES, (n,), generator=g))


@pytest.fixture(scope="module")
def reference_max_batch() -> int:
    """``batchprof.profile`` on the hand-written Workload of the same MLP and budget."""
    result = batchprof.profile(tiny_workload(WIDTH), memory_limit=BUDGET, **FAST)
    assert result.max_batch is not None and result.max_batch > 50  # past the 50-row data set
    return result.max_batch


# ---- (model, data, loss) -> Workload --------------------------------------------------------
def test_batches_come_from_the_loader_at_any_size():
    data = features(50)
    w = workload_from_data(mlp(), DataLoader(data, batch_size=8, shuffle=True), nn.CrossEntropyLoss())
    x, y = w.batch_fn(77, torch.device("cpu"))  # larger than the data set: cycled
    assert x.shape == (77, WIDTH) and y.shape == (77,) and y.dtype == torch.long
    assert torch.equal(x[:50], data.tensors[0]) and torch.equal(x[50:], data.tensors[0][:27])
    again, _ = w.batch_fn(77, torch.device("cpu"))
    assert torch.equal(again, x)  # the same size always gets the same samples


def test_model_instance_is_copied_onto_the_default_device():
    model = mlp()
    w = workload_from_data(model, features(), nn.CrossEntropyLoss())
    with torch.device("meta"):
        on_meta = w.model_fn()
    assert all(p.is_meta for p in on_meta.parameters())
    fresh = w.model_fn()
    assert fresh is not model and torch.equal(fresh[0].weight, model[0].weight)
    loss = w.loss_fn(fresh, w.batch_fn(5, torch.device("cpu")))
    assert loss.shape == () and loss.requires_grad


def test_data_workload_profiles_like_the_hand_written_one(reference_max_batch):
    w = workload_from_data(mlp(), DataLoader(features(), batch_size=8), nn.CrossEntropyLoss())
    result = batchprof.profile(w, memory_limit=BUDGET, **FAST)
    assert result.max_batch == reference_max_batch


class DictRows(Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": torch.full((WIDTH,), float(i)), "label": torch.tensor(i % CLASSES)}


class ModelWithLoss(nn.Module):
    """Returns its own loss, as a Hugging Face model does (an object with .loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: torch.Tensor, label: torch.Tensor):
        return type("Out", (), {"loss": F.cross_entropy(self.net(x), label)})()


def test_custom_collate_and_the_models_own_loss():
    def collate(rows):
        return {"x": torch.stack([r["x"] for r in rows]) * 2,
                "label": torch.stack([r["label"] for r in rows])}

    w = workload_from_data(ModelWithLoss, DataLoader(DictRows(), collate_fn=collate))
    batch = w.batch_fn(4, torch.device("cpu"))
    assert batch["x"][:, 0].tolist() == [0.0, 2.0, 4.0, 0.0]
    assert w.name == "ModelWithLoss"
    assert w.loss_fn(w.model_fn(), batch).shape == ()


def test_bad_input_is_explained():
    with pytest.raises(WorkloadError, match="not both"):
        workload_from_data(mlp(), features(), nn.CrossEntropyLoss(), loss_fn=lambda m, b: m(b))
    with pytest.raises(WorkloadError, match="empty"):
        workload_from_data(mlp(), [], nn.CrossEntropyLoss()).batch_fn(2, torch.device("cpu"))
    w = workload_from_data(mlp(), list(torch.ones(3, WIDTH)))  # no loss; the model gives logits
    with pytest.raises(WorkloadError, match="not a scalar loss"):
        w.loss_fn(w.model_fn(), w.batch_fn(2, torch.device("cpu")))
    w = workload_from_data(mlp(), features())  # (x, y) batches and no criterion
    with pytest.raises(WorkloadError, match="pass loss="):
        w.loss_fn(w.model_fn(), w.batch_fn(2, torch.device("cpu")))
    with pytest.raises(WorkloadError, match="torch.nn.Module"):
        workload_from_data(42, features())


def test_to_device_keeps_structure():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    moved = to_device({"p": Pair(torch.ones(1), [torch.zeros(2), "text"])}, "meta")
    assert moved["p"].a.is_meta and moved["p"].b[0].is_meta and moved["p"].b[1] == "text"


def test_missing_dependency_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"batchprof\[nope\]") as info:
        require("batchprof_no_such_module", "nope", "nothing==1")
    assert isinstance(info.value, ImportError)


# ---- Lightning ------------------------------------------------------------------------------
def _lightning():
    return pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")


def _lightning_classes():
    pl = _lightning()

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)  # without a trainer Lightning only warns: muted
            return {"loss": loss}

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3, foreach=False)

    class Features(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.batch_size = 2
            self.setups = 0

        def setup(self, stage: str) -> None:
            self.data, self.setups = features(), self.setups + 1

        def train_dataloader(self):
            return DataLoader(self.data, batch_size=self.batch_size)

    return Classifier, Features


def test_profile_lightning_sets_the_datamodule_batch_size(reference_max_batch):
    from batchprof.integrations.lightning import lightning_workload, profile_lightning

    Classifier, Features = _lightning_classes()
    model, dm = Classifier(), Features()
    result = profile_lightning(model, dm, memory_limit=BUDGET, **FAST)
    assert dm.setups == 1
    assert result.recommended_batch == result.max_batch == reference_max_batch
    assert dm.batch_size == reference_max_batch
    assert "AdamW from configure_optimizers" in lightning_workload(model, features()).description


def test_lightning_callback_sets_the_batch_size_before_the_loader_is_built(reference_max_batch):
    pl = _lightning()
    from batchprof.integrations.lightning import BatchSizeProfiler

    Classifier, Features = _lightning_classes()
    model, dm = Classifier(), Features()
    seen: list[int] = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(len(batch[0]))

    profiler = BatchSizeProfiler(memory_limit=BUDGET, **FAST)
    trainer = pl.Trainer(max_steps=1, callbacks=[profiler, Spy()], accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert profiler.batch_size == dm.batch_size == reference_max_batch
    assert seen == [min(reference_max_batch, len(dm.data))]  # the fit loop used the new size
    assert trainer.train_dataloader.batch_size == reference_max_batch


def test_lightning_without_a_batch_size_attribute_fails_before_probing():
    from batchprof.integrations.lightning import profile_lightning

    Classifier, _ = _lightning_classes()
    model = Classifier()
    model.train_dataloader = lambda: DataLoader(features(), batch_size=4)
    probes = []
    with pytest.raises(IntegrationError, match="nowhere to set 'batch_size'"):
        profile_lightning(model, memory_limit=BUDGET, on_probe=probes.append, **FAST)
    assert probes == []
    result = profile_lightning(model, memory_limit=BUDGET, set_batch_size=False, **FAST)
    assert result.max_batch is not None


# ---- Hugging Face Trainer -------------------------------------------------------------------
SEQ, VOCAB, HF_BUDGET = 16, 64, "4MiB"


def _gpt2_config():
    transformers = pytest.importorskip("transformers", reason="the hf extra is not installed")
    return transformers, transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=SEQ,
        bos_token_id=0, eos_token_id=0)


def test_profile_trainer_sets_per_device_train_batch_size(tmp_path):
    transformers, config = _gpt2_config()
    from batchprof.integrations.hf import profile_trainer

    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": ids, "labels": ids, "attention_mask": torch.ones(SEQ, dtype=torch.long),
             "unused": torch.tensor(1.0)}  # dropped by the Trainer's column removal
            for ids in torch.randint(0, VOCAB, (40, SEQ), generator=g)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2,
                                          report_to=[], use_cpu=True, optim="adamw_torch")
    trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args,
                                   train_dataset=rows,
                                   data_collator=transformers.default_data_collator)
    result = profile_trainer(trainer, memory_limit=HF_BUDGET, **FAST)

    def batch_fn(b: int, device: torch.device):
        ids = torch.randint(0, VOCAB, (b, SEQ), generator=torch.Generator().manual_seed(b))
        return {"input_ids": ids.to(device), "labels": ids.clone().to(device),  # own storage
                "attention_mask": torch.ones(b, SEQ, dtype=torch.long, device=device)}

    by_hand = Workload("gpt2-by-hand", lambda: transformers.GPT2LMHeadModel(config), batch_fn,
                       lambda model, batch: model(**batch).loss)
    expected = batchprof.profile(by_hand, memory_limit=HF_BUDGET, **FAST).max_batch
    assert expected is not None and expected > 2
    assert result.max_batch == expected
    assert trainer.args.per_device_train_batch_size == expected
    assert trainer.get_train_dataloader().total_batch_size == expected  # what train() uses


def test_profile_trainer_rejects_a_trainer_without_data(tmp_path):
    transformers, config = _gpt2_config()
    from batchprof.integrations.hf import profile_trainer

    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args)
    with pytest.raises(IntegrationError, match="no train_dataset"):
        profile_trainer(trainer, memory_limit=HF_BUDGET, **FAST)
