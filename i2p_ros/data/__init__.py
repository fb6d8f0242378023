"""SemanticKITTI data layer and LiDAR simulator.

Submodules (import them directly; only ``dataset`` needs torch):

- :mod:`.labels`          label YAML loading / validation, raw <-> training id maps (ignore index 255)
- :mod:`.semantic_kitti`  reader / writer of the official layout, with validation
- :mod:`.dataset`         torch Dataset, augmentation, voxelization, collate, mapping back to points
- :mod:`.raycast`         sensor model and vectorised ray casting against primitives
- :mod:`.street`          procedural streets and drives
- :mod:`.sim`             simulated drives -> SemanticKITTI sequences, ``i2p-sim`` CLI
- :mod:`.bev`             bird's-eye-view images coloured by ``color_map``
"""

from .labels import IGNORE_INDEX, LabelConfig, LabelConfigError, UnknownLabelError, load_label_config
from .semantic_kitti import SemanticKittiFormatError

__all__ = ["IGNORE_INDEX", "LabelConfig", "LabelConfigError", "SemanticKittiFormatError", "UnknownLabelError",
           "load_label_config"]
