"""TFF's baseline tasks (``tff.simulation.baselines``): each benchmark's client preprocessing,
producing the arrays TFF's pipelines produce (NumPy, on the host), with TFF's model, loss and
metrics.

- :class:`ClientSpec` (:mod:`.client_spec`): epochs, batch size, example cap and shuffle buffer.
- :class:`BaselineTask`, :class:`BaselineTaskDatasets` (:mod:`.baseline_task`): a task's data,
  preprocessing and ``model_fn``.
- :mod:`.shakespeare`: next-character prediction (``create_character_prediction_task``).
- :mod:`.stackoverflow`: next-word prediction (``create_word_prediction_task``) and tag
  prediction (``create_tag_prediction_task``).
- :mod:`.cifar100`: image classification (``create_image_classification_task``).
- :mod:`.emnist`: character recognition (``create_character_recognition_task``).
"""

from fedjax_like.simulation.baselines import cifar100, emnist, shakespeare, stackoverflow
from fedjax_like.simulation.baselines.baseline_task import (
    BaselineTask,
    BaselineTaskDatasets,
    unbatch,
)
from fedjax_like.simulation.baselines.client_spec import ClientSpec

__all__ = [
    'BaselineTask',
    'BaselineTaskDatasets',
    'ClientSpec',
    'cifar100',
    'emnist',
    'shakespeare',
    'stackoverflow',
    'unbatch',
]
