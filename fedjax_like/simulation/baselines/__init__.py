"""TFF's baseline tasks (``tff.simulation.baselines``): each benchmark's client preprocessing,
producing the arrays TFF's pipelines produce, as NumPy on the host.

- :class:`ClientSpec` (:mod:`.client_spec`): epochs, batch size, example cap and shuffle buffer.
- :mod:`.shakespeare`: next-character prediction preprocessing.
"""

from fedjax_like.simulation.baselines import shakespeare
from fedjax_like.simulation.baselines.client_spec import ClientSpec

__all__ = ['ClientSpec', 'shakespeare']
