"""``fl.learning.models``: the model names TFF programs reach for, under TFF's module path.

TFF keeps its model types in ``tff.learning.models`` (``ModelWeights``, ``FunctionalModel``,
``functional_model_from_keras``); here models live in :mod:`fedjax_like.models`, and this module
gives the same objects under TFF's path, so ``fl.learning.models.ModelWeights`` is
``fl.models.ModelWeights``:

- :class:`ModelWeights` ``(trainable, non_trainable)``, TFF's field names;
- :class:`FunctionalModel`: :class:`fedjax_like.models.Model` (pure ``init``/``apply``/loss/metric
  functions, what TFF's functional models are);
- :func:`from_linen`, :func:`from_nnx`: the Flax adapters, the counterparts of
  ``functional_model_from_keras``.
"""

from fedjax_like.models.flax import export_flax_variables, from_linen, from_nnx
from fedjax_like.models.model import Model, ModelWeights

FunctionalModel = Model

__all__ = [
    'FunctionalModel',
    'Model',
    'ModelWeights',
    'export_flax_variables',
    'from_linen',
    'from_nnx',
]
