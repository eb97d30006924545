"""``tff.simulation.baselines.ClientSpec``: how a task's client datasets are prepared."""

from __future__ import annotations

import dataclasses


def _check_positive_int(name: str, value: object, optional: bool) -> None:
  if optional and value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f'{name} must be an int{" or None" if optional else ""}; got {value!r}.')
  if value <= 0:
    raise ValueError(f'{name} must be positive. Found {value}.')


@dataclasses.dataclass(frozen=True)
class ClientSpec:
  """Configuration of clients in a baseline task (TFF's fields, defaults and checks).

  Attributes:
    num_epochs: passes over each client's whole local dataset (positive).
    batch_size: examples per batch (positive).
    max_elements: the most examples a client uses, counted after the repeat over ``num_epochs``
      (positive); None uses them all.
    shuffle_buffer_size: the shuffle buffer (positive); None picks the task's default; 1 disables
      shuffling.
  """

  num_epochs: int
  batch_size: int
  max_elements: int | None = None
  shuffle_buffer_size: int | None = None

  def __post_init__(self):
    _check_positive_int('num_epochs', self.num_epochs, optional=False)
    _check_positive_int('batch_size', self.batch_size, optional=False)
    _check_positive_int('max_elements', self.max_elements, optional=True)
    _check_positive_int('shuffle_buffer_size', self.shuffle_buffer_size, optional=True)
