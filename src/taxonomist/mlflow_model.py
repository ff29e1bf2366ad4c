"""A taxonomist bundle as an MLflow pyfunc model, logged as code ("models from code"): MLflow loads this file and
the bundle as an artifact, so nothing is pickled and ``mlflow models serve`` / ``mlflow.pyfunc.load_model`` work.

Input: a DataFrame of products (``title``; ``description``, ``image`` and attribute columns optional). Output: a
DataFrame as :meth:`TaxonomyClassifier.predict_frame` gives it (``id``, ``category``, ``confidence``, ``leaf``,
``leaf_confidence``, ``backed_off``, ``alternatives``, ...). ``params={"top_k": 3, "min_confidence": 0.5}``.
Logged by :meth:`taxonomist.tracking.Tracker.log_pyfunc` (``taxonomist train --track``).
"""
from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel


class TaxonomistModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from taxonomist.classifier import load

        self.classifier = load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        params = params or {}
        mc = params.get("min_confidence")
        result: pd.DataFrame = self.classifier.predict_frame(frame, top_k=int(params.get("top_k", 3)),
                                             min_confidence=None if mc is None else float(mc))
        return result


mlflow.models.set_model(TaxonomistModel())
