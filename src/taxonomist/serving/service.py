"""The service the endpoints share, made of narrow parts: the inference core (:mod:`.inference`), the review desk
(:mod:`.desk`), what is watched of the answers (:mod:`.watch`), the optional resources (:mod:`.resources`), the
retraining jobs (:mod:`.jobs`), the keyless clients' budget and the metrics.

:class:`Service` knows nothing of HTTP: a request it refuses raises :class:`ServiceError` (a status and a
detail), which the app turns into the HTTP answer at the route edge. Routes depend on the part they use
(:mod:`.deps`).
"""

from __future__ import annotations

import random

from .desk import ReviewDesk
from .inference import Inference
from .jobs import RetrainJobs
from .limits import Budget, ServiceError
from .metrics import ServiceMetrics
from .resources import Resources
from .settings import ServeSettings
from .watch import Watch

__all__ = ["Service", "ServiceError"]


class Service:
    """A server's parts, made once from its settings."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.rng = random.Random(settings.audit_seed)  # the audit sample of confident answers
        self.budget = Budget()  # server time of keyless clients on the model routes
        self.inference = Inference(settings, self.metrics)
        self.desk = ReviewDesk(settings, self.metrics)
        self.watch = Watch(settings, self.metrics, self.inference, self.desk)
        self.resources = Resources(settings)
        self.retrains = RetrainJobs(settings, self.inference, self.desk)
