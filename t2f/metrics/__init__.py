"""Evaluation metrics: FID/KID/IS (torch-fidelity InceptionV3, torchmetrics states), ProGAN's SWD, and
the protocol under which real-image statistics are computed and cached."""

from t2f.metrics.common import to_uint8
from t2f.metrics.inception import (
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_URL,
    InceptionMetrics,
    InceptionWeightsUnavailableWarning,
    build_inception_metrics,
    default_inception_weights_path,
    load_feature_extractor,
)
from t2f.metrics.protocol import PROTOCOL_VERSION, Protocol, cached_real_statistics, statistics_path
from t2f.metrics.swd import SlicedWassersteinDistance, sliced_wasserstein_distance

__all__ = [
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "PROTOCOL_VERSION",
    "InceptionMetrics",
    "InceptionWeightsUnavailableWarning",
    "Protocol",
    "SlicedWassersteinDistance",
    "build_inception_metrics",
    "cached_real_statistics",
    "default_inception_weights_path",
    "load_feature_extractor",
    "sliced_wasserstein_distance",
    "statistics_path",
    "to_uint8",
]
