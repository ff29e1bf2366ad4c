"""The fine-tune tier: the pretrained transformer trained end to end with a classification head (torch).

Recipe (the one measured in ../shared/MEASUREMENTS.md, made configurable): mean-pooled encoder output → linear
head; AdamW with a higher learning rate for the head than for the encoder, linear warm-up then linear decay,
label smoothing, optional class weights, a max token length; after each epoch the validation macro-F1 is
measured and the best epoch's weights are kept (early stopping with ``patience``). Mixed precision: bf16
autocast on GPUs and on CPUs with bf16 units (``precision="auto"``). Uses the GPU when one is present.

The bundle keeps only what training changed: the encoder's and the head's weights as ``finetune.safetensors``
(safetensors: plain tensors, nothing executed on load); the tokenizer and architecture come from the base
encoder (a preset or folder), which the manifest names.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FineTuner"]

logger = logging.getLogger(__name__)


class FineTuner:
    """Fine-tune a :class:`~taxonomist.encoders.transformer.TorchTextEncoder` into a classifier.

    Args:
        epochs: passes over the training data (the best epoch on validation is kept).
        batch_size: texts per optimisation step.
        lr: encoder learning rate; ``head_lr``: the head's.
        warmup: share of the steps spent warming the learning rate up.
        max_length: tokens per text while fine-tuning and predicting.
        label_smoothing: cross-entropy label smoothing.
        class_weight: ``None`` or ``"balanced"``.
        patience: epochs without a better validation macro-F1 before stopping.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        device: ``None`` (CUDA when available) or a torch device string.
        max_seconds: stop after the epoch that crosses this training time (``None``: no limit).
        seed: torch seed (initialisation of the head, shuffling).
    """

    def __init__(self, epochs: int = 3, batch_size: int = 32, lr: float = 8e-5, head_lr: float = 2e-3,
                 warmup: float = 0.1, max_length: int = 48, label_smoothing: float = 0.05,
                 class_weight: str | None = None, patience: int = 1, precision: str = "auto",
                 device: str | None = None, max_seconds: float | None = None, seed: int = 0) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.warmup = warmup
        self.max_length = max_length
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight
        self.patience = patience
        self.precision = precision
        self.device = device
        self.max_seconds = max_seconds
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "head_lr", "warmup", "max_length",
                                              "label_smoothing", "class_weight", "patience", "precision",
                                              "max_seconds", "seed")}

    # -- model --------------------------------------------------------------------------------------------
    def _setup(self, encoder: Any, n_classes: int) -> None:
        import torch

        from ..encoders.transformer import resolve_precision

        self.device_ = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision_ = resolve_precision(self.precision, self.device_)
        self.encoder_ = encoder
        self.model_ = copy.deepcopy(encoder.model).to(self.device_)
        self.head_ = torch.nn.Linear(encoder.dim, n_classes).to(self.device_)
        self.n_classes_ = n_classes

    def _forward(self, texts: list[str]) -> Any:
        enc = self.encoder_.tokenizer([self.encoder_.prefix + t for t in texts], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device_) for k, v in enc.items()}
        from ..encoders.transformer import autocast

        with autocast(self.device_, self.precision_):
            hidden = self.model_(**batch).last_hidden_state
            pooled = self.encoder_.pool(hidden.float(), batch["attention_mask"])
            return self.head_(pooled).float()

    # -- training -----------------------------------------------------------------------------------------
    def fit(self, encoder: Any, texts: Sequence[str], y: np.ndarray, n_classes: int,
            val_texts: Sequence[str] | None = None, val_y: np.ndarray | None = None,
            show_progress_bar: bool | None = None) -> FineTuner:
        import torch
        from sklearn.metrics import f1_score

        from ..encoders.transformer import progress

        torch.manual_seed(self.seed)
        self._setup(encoder, n_classes)
        texts = list(texts)
        y = np.asarray(y, dtype=np.int64)
        weight = None
        if self.class_weight == "balanced":
            counts = np.bincount(y, minlength=n_classes).astype(np.float64)
            w = np.where(counts > 0, len(y) / (max(1, (counts > 0).sum()) * np.maximum(counts, 1)), 0.0)
            weight = torch.tensor(w, dtype=torch.float32, device=self.device_)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)
        opt = torch.optim.AdamW([{"params": self.model_.parameters(), "lr": self.lr},
                                 {"params": self.head_.parameters(), "lr": self.head_lr}], weight_decay=0.01)
        steps_per_epoch = (len(texts) + self.batch_size - 1) // self.batch_size
        total = max(1, steps_per_epoch * self.epochs)
        warm = max(1, int(self.warmup * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm)))
        rng = np.random.default_rng(self.seed)
        best_f1, best_state, bad_epochs = -1.0, None, 0
        self.history_: list[dict[str, float]] = []
        start = time.perf_counter()
        for epoch in range(self.epochs):
            self.model_.train()
            self.head_.train()
            order = rng.permutation(len(texts))
            running = 0.0
            with progress(len(texts), show_progress_bar, f"fine-tuning epoch {epoch + 1}/{self.epochs}") as bar:
                for s in range(0, len(texts), self.batch_size):
                    idx = order[s:s + self.batch_size]
                    logits = self._forward([texts[i] for i in idx])
                    loss = loss_fn(logits, torch.as_tensor(y[idx], device=self.device_))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_([*self.model_.parameters(), *self.head_.parameters()], 1.0)
                    opt.step()
                    sched.step()
                    running += float(loss.detach()) * len(idx)
                    bar.update(len(idx))
            record = {"epoch": epoch + 1, "loss": running / max(1, len(texts)),
                      "seconds": time.perf_counter() - start}
            if val_texts is not None and val_y is not None and len(val_y):
                pred = self.logits(val_texts).argmax(axis=1)
                record["val_macro_f1"] = float(f1_score(val_y, pred, average="macro", zero_division=0))
                record["val_accuracy"] = float((pred == val_y).mean())
                if record["val_macro_f1"] > best_f1:
                    best_f1, bad_epochs = record["val_macro_f1"], 0
                    best_state = self._state_tensors()
                else:
                    bad_epochs += 1
            self.history_.append(record)
            logger.info("fine-tune epoch %d: %s", epoch + 1,
                        ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
            if bad_epochs >= self.patience:
                logger.info("early stopping: validation macro-F1 did not improve for %d epoch(s)", bad_epochs)
                break
            if self.max_seconds is not None and record["seconds"] >= self.max_seconds:
                logger.info("stopping: the time limit of %.0f s is reached", self.max_seconds)
                break
        if best_state is not None:
            self._load_tensors(best_state)
        self.train_seconds_ = time.perf_counter() - start
        self.model_.eval()
        self.head_.eval()
        return self

    # -- inference ----------------------------------------------------------------------------------------
    def logits(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), self.n_classes_), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        was_training = self.model_.training
        self.model_.eval()
        self.head_.eval()
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                idx = order[s:s + batch_size]
                out[idx] = self._forward([texts[i] for i in idx]).cpu().numpy()
        if was_training:
            self.model_.train()
            self.head_.train()
        return out

    # -- persistence (safetensors) ------------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, Any]:
        state = {f"encoder.{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in self.model_.state_dict().items()}
        state.update({f"head.{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in self.head_.state_dict().items()})
        return state

    def _load_tensors(self, state: dict[str, Any]) -> None:
        enc = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
        missing, unexpected = self.model_.load_state_dict(enc, strict=False)
        if unexpected or [m for m in missing if "position_ids" not in m]:
            raise ValueError(f"fine-tuned weights do not fit the base encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.head_.load_state_dict(head)

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        return bytes(save(self._state_tensors()))

    @classmethod
    def from_bytes(cls, params: dict[str, Any], encoder: Any, n_classes: int, blob: bytes) -> FineTuner:
        from safetensors.torch import load

        ft = cls(**params)
        ft._setup(encoder, n_classes)
        ft._load_tensors(load(blob))
        ft.model_.eval()
        ft.head_.eval()
        return ft
