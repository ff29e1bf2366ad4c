"""A differentially private linear classifier: DP-SGD on hashed n-grams, with Opacus's privacy accountant.

For models that learn from personal text (the after-sales message router), not product titles. The guarantee is
(ε, δ)-differential privacy per message: adding or removing any one message changes the distribution of the
weights by at most that much. Everything the bundle stores from the data goes through the mechanism:

- **features** are hashed word and character n-grams with term frequencies (:class:`SparseTextEncoder` with
  ``n_features``): no vocabulary, no idf, no script detection learned from the messages (CJK word segmentation
  and character n-grams are used for every text; Latin words are kept whole by the same tokenizer);
- **weights** come from DP-SGD (Abadi et al. 2016): batches drawn by Poisson sampling, each message's gradient
  clipped to norm ``clip``, Gaussian noise of standard deviation ``noise_multiplier × clip`` added to the
  batch's sum. For a linear softmax model a message's gradient is ``(p − y) ⊗ [x, 1]``, a rank-one matrix whose
  norm is ``‖p − y‖·√(‖x‖² + 1)``, so the per-message clipping costs no per-message gradient in memory;
- **the noise multiplier** is chosen by Opacus's accountant (``get_noise_multiplier``, RDP) for the target ε,
  δ, the sampling rate and the number of steps; the ε actually spent is recomputed and stored;
- **no calibration** is fitted (a temperature or isotonic map fitted on messages would need a budget of its own),
  and the classifier stores no fingerprint or title hashes of its training data.

What is public by assumption: the list of categories (the labels a shop defined), the number of messages (it
sets the sampling rate, as in Opacus) and the hyperparameters below, which were fixed in advance, not tuned on
the user's messages.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..encoders.sparse import SparseTextEncoder
from ..exceptions import TaxonomistError
from .sparse import SparseClassifier, as_pairs

__all__ = ["N_FEATURES", "PrivateLinearClassifier", "clipped_residuals", "noise_multiplier", "spent_epsilon"]

logger = logging.getLogger(__name__)

N_FEATURES = 2**14
"""Hashed columns per block (word n-grams, char n-grams) by default."""


def _need_opacus() -> None:
    import importlib.util

    if importlib.util.find_spec("opacus") is None:
        raise TaxonomistError("differentially private training needs Opacus's privacy accountant: "
                              "pip install 'taxonomist[privacy]'")


def _alphas() -> list[float]:
    """RDP orders searched by the accountant: Opacus's defaults and larger ones, which small noise needs."""
    from opacus.accountants import RDPAccountant

    return [*RDPAccountant.DEFAULT_ALPHAS, *range(64, 1025, 16)]


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The Gaussian noise multiplier of DP-SGD for an (ε, δ) budget (Opacus's RDP accountant); 0 for ε = ∞."""
    if math.isinf(epsilon):
        return 0.0
    _need_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant="rdp", alphas=_alphas()))


def spent_epsilon(sigma: float, delta: float, sample_rate: float, steps: int) -> float:
    """The ε that ``steps`` steps of DP-SGD with noise multiplier ``sigma`` spend at ``delta`` (RDP)."""
    if sigma <= 0:
        return math.inf
    _need_opacus()
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta, alphas=_alphas()))


def clipped_residuals(x: sp.csr_matrix, y: np.ndarray, W: np.ndarray, b: np.ndarray, clip: float,
                      row_sq: np.ndarray | None = None) -> np.ndarray:
    """``p − onehot(y)`` per row, scaled so each row's gradient ``(p − y) ⊗ [x, 1]`` has norm ≤ ``clip``.

    The gradient of a softmax linear model for one message is rank one, so its norm is
    ``‖p − y‖ · √(‖x‖² + 1)`` (``row_sq`` = ``‖x‖² + 1`` when precomputed): each message is clipped exactly as
    DP-SGD clips, without building its gradient.
    """
    if row_sq is None:
        row_sq = np.asarray(x.multiply(x).sum(axis=1)).ravel() + 1.0
    z: np.ndarray = np.asarray(x @ W.T) + b
    z -= z.max(axis=1, keepdims=True)
    p: np.ndarray = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    norms = np.sqrt((p * p).sum(axis=1) * row_sq)
    p *= np.minimum(1.0, clip / np.maximum(norms, 1e-12))[:, None]
    return p


class PrivateLinearClassifier(SparseClassifier):
    """Multinomial logistic regression trained with DP-SGD over hashed n-grams (see the module docstring).

    ``X`` is a list of texts or a ``(titles, contexts)`` pair of lists, as for :class:`SparseClassifier`, whose
    prediction, explanation and persistence it shares.

    Args:
        epsilon: the privacy budget ε of this model (``math.inf``: the same training without noise).
        delta: δ of the guarantee; keep it well below 1 / the number of messages.
        n_features: hashed columns per block (word n-grams, char n-grams): more columns, more noise in total.
        epochs: passes over the data (in expectation: batches are Poisson samples).
        batch_size: expected batch size (sampling rate = batch_size / number of messages).
        clip: the bound on each message's gradient norm.
        learning_rate: Adam's step size on the noisy gradients.
        weight_decay: L2 penalty on the weights (data-independent, so free of privacy cost).
        encoder: a hashed :class:`SparseTextEncoder` to clone (default: CJK-aware n-grams, ``n_features``).
        random_state: ``None`` (the default) draws the batches and the noise from fresh operating-system entropy,
            as the guarantee needs; a fixed seed makes training reproducible (tests, benchmarks) and voids the
            guarantee against anyone who knows the seed.

    Example:
        >>> import math
        >>> clf = PrivateLinearClassifier(epsilon=math.inf, epochs=30, batch_size=4, random_state=0).fit(
        ...     ["red shirt", "blue jeans", "green shirt", "black jeans"] * 3, ["Shirts", "Jeans", "Shirts", "Jeans"] * 3)
        >>> clf.predict(["white shirt"]).tolist()
        ['Shirts']
    """

    def __init__(
        self,
        epsilon: float = 3.0,
        delta: float = 1e-6,
        n_features: int = N_FEATURES,
        epochs: int = 15,
        batch_size: int = 1024,
        clip: float = 1.0,
        learning_rate: float = 0.02,
        weight_decay: float = 1e-5,
        encoder: SparseTextEncoder | None = None,
        random_state: int | None = None,
    ) -> None:
        super().__init__(calibration="none", prune=0.0, encoder=encoder)
        self.random_state = random_state  # type: ignore[assignment]
        self.epsilon = epsilon
        self.delta = delta
        self.n_features = n_features
        self.epochs = epochs
        self.batch_size = batch_size
        self.clip = clip
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay

    def _check_params(self, n: int) -> None:
        if not (self.epsilon > 0):
            raise ValueError(f"epsilon must be > 0 (math.inf for no noise), got {self.epsilon}")
        if not (0 < self.delta < 1):
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.delta >= 1.0 / n:
            logger.warning("delta %.2g is not below 1 / the %d messages: the guarantee is weak; use a smaller delta",
                           self.delta, n)
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.clip > 0 and self.learning_rate > 0 and self.weight_decay >= 0):
            raise ValueError("clip and learning_rate must be > 0 and weight_decay >= 0")

    def encode(self, X: Any) -> None:
        """``None``: this model hashes its texts in each fit (see :meth:`SparseClassifier.encode`)."""
        return None

    def fit(self, X: Any, y: Sequence[str], groups: Any = None) -> PrivateLinearClassifier:
        """Train on texts ``X`` and labels ``y`` (``groups`` is accepted and ignored: there is no calibration
        split)."""
        titles, contexts = as_pairs(X)
        y_arr = np.asarray([str(v) for v in y], dtype=object)
        n = len(titles)
        if len(y_arr) != n:
            raise ValueError(f"expected one label per product: {n} products, {len(y_arr)} labels")
        self.classes_, y_idx = np.unique(y_arr, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"expected at least 2 categories to learn, found {len(self.classes_)}: {list(self.classes_)}")
        self._check_params(n)
        from sklearn.base import clone

        self.encoder_ = (clone(self.encoder) if self.encoder is not None
                         else SparseTextEncoder(n_features=self.n_features, cjk=True))
        if self.encoder_.n_features is None or self.encoder_.cjk == "auto":
            raise ValueError("a private model needs a hashed encoder with a fixed script setting "
                             "(SparseTextEncoder(n_features=..., cjk=True or False)): a learned vocabulary would leak")
        Xs = sp.csr_matrix(self.encoder_.fit_transform(titles, contexts), dtype=np.float32)
        return self._fit_features(Xs, y_idx)

    def _fit_features(self, Xs: sp.csr_matrix, y_idx: np.ndarray) -> PrivateLinearClassifier:
        """DP-SGD on encoded rows ``Xs`` with label indices ``y_idx`` (into ``classes_``)."""
        n = Xs.shape[0]
        k, d = len(self.classes_), Xs.shape[1]
        q = min(1.0, self.batch_size / n)
        steps = max(1, int(round(self.epochs / q)))
        sigma = noise_multiplier(float(self.epsilon), float(self.delta), q, steps)
        logger.info("DP-SGD: %d messages, %d steps at sampling rate %.4f, noise multiplier %.3f for epsilon %s",
                    n, steps, q, sigma, self.epsilon)
        rng = np.random.default_rng(self.random_state)
        W = np.zeros((k, d), dtype=np.float32)
        b = np.zeros(k, dtype=np.float32)
        adam = _Adam((W, b), self.learning_rate)
        row_sq = np.asarray(Xs.multiply(Xs).sum(axis=1)).ravel() + 1.0  # ‖[x, 1]‖²
        expected = q * n
        from tqdm.auto import tqdm

        for _ in tqdm(range(steps), desc="DP-SGD", unit="step", disable=steps < 50, leave=False):
            idx = np.flatnonzero(rng.random(n) < q)
            gW = np.zeros((k, d), dtype=np.float32)
            gb = np.zeros(k, dtype=np.float32)
            if len(idx):
                xb = Xs[idx]
                p = clipped_residuals(xb, y_idx[idx], W, b, self.clip, row_sq[idx])
                gW += np.asarray((xb.T @ p).T, dtype=np.float32)
                gb += p.sum(axis=0)
            if sigma > 0:
                gW += rng.standard_normal(gW.shape, dtype=np.float32) * np.float32(sigma * self.clip)
                gb += rng.standard_normal(k, dtype=np.float32) * np.float32(sigma * self.clip)
            gW /= expected
            gb /= expected
            gW += self.weight_decay * W
            adam.step((gW, gb))
        self.noise_multiplier_ = sigma
        self.steps_ = steps
        self.sample_rate_ = q
        self.epsilon_ = spent_epsilon(sigma, float(self.delta), q, steps)
        self.temperature_ = 1.0
        self.top_label_ = None
        self.hierarchy_, self.split_depth_, self.tree_, self.level_temperatures_ = "flat", 1, None, None
        self.coef_ = sp.csr_matrix(W)
        self.intercept_ = b
        self._coef_t = self.coef_.T.tocsr()
        self.n_features_in_ = d
        return self

    def privacy(self) -> dict[str, Any]:
        """The guarantee of the fitted weights: ε spent, δ, noise multiplier, sampling rate and steps."""
        self._check()
        return {"epsilon": self.epsilon_, "delta": float(self.delta), "noise_multiplier": self.noise_multiplier_,
                "sample_rate": self.sample_rate_, "steps": self.steps_, "accountant": "opacus-rdp"}

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        params, arrays, objects = super().get_state()
        privacy = self.privacy()
        if math.isinf(privacy["epsilon"]):  # JSON has no infinity
            privacy["epsilon"] = None
        params.update(kind="private", privacy_=privacy)
        return params, arrays, objects

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], objects: dict[str, Any]) -> PrivateLinearClassifier:
        p = dict(params)
        p.pop("kind", None)
        privacy = p.pop("privacy_")
        clf = super().from_state(p, arrays, objects)
        assert isinstance(clf, PrivateLinearClassifier)
        clf.epsilon_ = math.inf if privacy["epsilon"] is None else float(privacy["epsilon"])
        clf.noise_multiplier_ = float(privacy["noise_multiplier"])
        clf.sample_rate_ = float(privacy["sample_rate"])
        clf.steps_ = int(privacy["steps"])
        return clf


class _Adam:
    """Adam on a tuple of arrays, in place (the noisy gradient is post-processing: no privacy cost)."""

    def __init__(self, params: tuple[np.ndarray, ...], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: tuple[np.ndarray, ...]) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)) * m / (np.sqrt(v) + self.eps)
