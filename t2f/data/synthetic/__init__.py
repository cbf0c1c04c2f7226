"""Built-in synthetic face dataset: procedurally drawn cartoon faces with captions.

Every image is drawn with PIL from a small set of categorical attributes (gender, skin
tone, hair colour and length, eye colour, glasses, smile, beard, background colour) plus
nuisance jitter (pose, scale, face shape, hair shape, clothing, lighting), so a model has
a real but quickly learnable problem, and every caption is generated from the same
attributes, so text-image agreement can be checked exactly with :func:`parse_caption`.

Image ``i`` of a dataset with seed ``s`` depends only on ``np.random.default_rng([s, i])``:
rendering order does not matter and large sets render in parallel. The rendered arrays
are cached once per (size, resolution, seed, captions_per_image, RENDER_VERSION).

The package's parts: ``attributes`` (values, sampling), ``renderer`` (drawing one face),
``captions`` (generating and parsing captions), ``dataset`` (the cached set and its datamodule).
"""

from t2f.data.synthetic.attributes import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    attributes_to_vector,
    describe_attributes,
    sample_attributes,
    vector_to_attributes,
)
from t2f.data.synthetic.captions import make_caption, make_captions, parse_caption
from t2f.data.synthetic.dataset import (
    PARALLEL_THRESHOLD,
    RENDER_VERSION,
    SyntheticDataModule,
    SyntheticFaces,
    cache_file_name,
    default_cache_dir,
    render_dataset,
    render_sample,
    synthetic_attribute_task,
)
from t2f.data.synthetic.renderer import MAX_RESOLUTION, MIN_RESOLUTION, render_face

__all__ = [
    "ATTRIBUTES", "ATTRIBUTE_NAMES", "MAX_RESOLUTION", "MIN_RESOLUTION", "PARALLEL_THRESHOLD", "RENDER_VERSION",
    "SyntheticDataModule", "SyntheticFaces", "attributes_to_vector", "cache_file_name", "default_cache_dir",
    "describe_attributes", "make_caption", "make_captions", "parse_caption", "render_dataset", "render_face",
    "render_sample", "sample_attributes", "synthetic_attribute_task", "vector_to_attributes",
]
