"""Metrics under attack. Importing this package registers every metric family."""
from ..registry import METRICS
from .base import IQAMetric, check_batch

# one module per family; each registers its metrics with @METRICS.register
from . import pyiqa_adapter, linearity, spaq, metaiqa, learned  # noqa: E402,F401
from .linearity import Linearity  # noqa: E402
from .metaiqa import MetaIQA  # noqa: E402
from .pyiqa_adapter import PyiqaMetric, create_pyiqa_metric  # noqa: E402
from .spaq import SPAQBaseline  # noqa: E402


def create_metric(name: str, **kwargs) -> IQAMetric:
    """Our registered metric, else any pyiqa no-reference metric through the adapter."""
    if name.partition(":")[0] in METRICS:
        return METRICS.create(name, **kwargs)
    return pyiqa_adapter.create_pyiqa_metric(name, unknown=METRICS, **kwargs)


__all__ = ["IQAMetric", "check_batch", "create_metric", "METRICS", "PyiqaMetric",
           "create_pyiqa_metric", "Linearity", "SPAQBaseline", "MetaIQA"]
