"""Metrics under attack. Importing this package registers every metric family."""
from ..registry import METRICS

# one module per family; each registers its metrics with @METRICS.register
from . import learned, linearity, metaiqa, pyiqa_adapter, spaq  # noqa: F401
from .base import IQAMetric, check_batch
from .linearity import Linearity
from .metaiqa import MetaIQA
from .pyiqa_adapter import PyiqaMetric, create_pyiqa_metric
from .spaq import SPAQBaseline


def create_metric(name: str, **kwargs) -> IQAMetric:
    """Our registered metric, else any pyiqa no-reference metric through the adapter."""
    if name.partition(":")[0] in METRICS:
        return METRICS.create(name, **kwargs)
    return create_pyiqa_metric(name, unknown=METRICS, **kwargs)


__all__ = ["METRICS", "IQAMetric", "Linearity", "MetaIQA", "PyiqaMetric", "SPAQBaseline",
           "check_batch", "create_metric", "create_pyiqa_metric"]

from .. import certify  # noqa: F401  (registers the smoothed metrics, "smoothed:<preset>")
