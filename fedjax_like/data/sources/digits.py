"""The offline default: scikit-learn's handwritten digits, split across clients, EMNIST-shaped.

scikit-learn ships 1,797 real 8x8 handwritten digits (the UCI "optdigits" set) inside its wheel, so
this source needs no network. To let every program written for federated EMNIST run on it
unchanged, each image is resized to 20x20 with bilinear interpolation and centred in a 28x28 frame (as
MNIST digits are) and stored as EMNIST's
``pixels`` (float32 ``[28, 28]``, 1.0 = background, as in TFF's files) with an int32 ``label``.

Clients are made by a seeded non-IID partition: each client draws its label mix from a
Dirichlet(``alpha``) distribution (small alpha = few labels per client) and its size from a
log-normal (a long tail, as in real federated data). Each client's examples are split into train
and test, so ``load_data`` returns ``(train, test)`` ClientData with the same client ids, like
``emnist.load_data``.
"""

from __future__ import annotations

import numpy as np

from fedjax_like.data.client_data import ClientData


def _resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """``[n, h, w] -> [n, size, size]`` by separable linear interpolation (pixel centres aligned)."""
  n, h, w = images.shape
  rows = (np.arange(size) + 0.5) * h / size - 0.5
  cols = (np.arange(size) + 0.5) * w / size - 0.5
  r0 = np.clip(np.floor(rows).astype(int), 0, h - 1)
  r1 = np.clip(r0 + 1, 0, h - 1)
  c0 = np.clip(np.floor(cols).astype(int), 0, w - 1)
  c1 = np.clip(c0 + 1, 0, w - 1)
  fr = np.clip(rows - r0, 0, 1)[None, :, None]
  fc = np.clip(cols - c0, 0, 1)[None, None, :]
  top = images[:, r0][:, :, c0] * (1 - fc) + images[:, r0][:, :, c1] * fc
  bottom = images[:, r1][:, :, c0] * (1 - fc) + images[:, r1][:, :, c1] * fc
  return top * (1 - fr) + bottom * fr


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
  try:
    from sklearn.datasets import load_digits
  except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The offline digits need scikit-learn: pip install 'fedjax_like[digits]'."
    ) from e
  digits = load_digits()
  ink = digits.images.astype(np.float64) / 16.0
  # As in (E)MNIST: the digit fills a 20x20 box centred in a 28x28 frame.
  ink = np.pad(_resize_bilinear(ink, 20), ((0, 0), (4, 4), (4, 4)))
  pixels = (1.0 - np.clip(ink, 0.0, 1.0)).astype(np.float32)
  return pixels, digits.target.astype(np.int32)


def partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 4
) -> list[np.ndarray]:
  """A seeded non-IID split of example indices: Dirichlet label skew, log-normal sizes.

  Args:
    labels: ``[n]`` integer labels.
    num_clients: how many clients.
    alpha: Dirichlet concentration of each client's label mix (smaller = more skewed).
    seed: the partition's seed.
    min_size: every client gets at least this many examples.

  Returns:
    ``num_clients`` disjoint index arrays covering every example once.
  """
  n = len(labels)
  if num_clients < 1 or num_clients * min_size > n:
    raise ValueError(f'Cannot split {n} examples into {num_clients} clients of >= {min_size}.')
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  sizes = rng.lognormal(mean=0.0, sigma=0.8, size=num_clients)
  sizes = np.maximum(min_size, np.floor(sizes / sizes.sum() * (n - num_clients * min_size)) + min_size)
  sizes = sizes.astype(int)
  sizes[np.argmax(sizes)] += n - sizes.sum()
  mixes = rng.dirichlet(alpha * np.ones(len(classes)), size=num_clients)
  pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
  assignment: list[list[int]] = [[] for _ in range(num_clients)]
  for client in rng.permutation(num_clients):
    for _ in range(sizes[client]):
      available = np.array([len(pools[c]) > 0 for c in classes], dtype=float)
      probs = mixes[client] * available
      probs = probs / probs.sum() if probs.sum() > 0 else available / available.sum()
      label = classes[rng.choice(len(classes), p=probs)]
      assignment[client].append(pools[label].pop())
  return [np.array(sorted(a), dtype=np.int64) for a in assignment]


def load_data(
    num_clients: int = 100, alpha: float = 0.5, test_fraction: float = 0.2, seed: int = 0
) -> tuple[ClientData, ClientData]:
  """The offline federated digits as ``(train, test)`` ClientData.

  Args:
    num_clients: number of clients (1,797 examples are split among them).
    alpha: Dirichlet label-skew concentration (0.5: most clients hold a few labels).
    test_fraction: share of each client's examples held out for its test set.
    seed: seeds the partition and the train/test split.

  Returns:
    ``(train, test)``; each example is ``{'pixels': float32[28, 28], 'label': int32}``.
  """
  pixels, labels = _load_digits()
  parts = partition(labels, num_clients, alpha, seed)
  rng = np.random.default_rng(seed + 1)
  train, test = {}, {}
  width = len(str(num_clients - 1))
  for i, idx in enumerate(parts):
    idx = rng.permutation(idx)
    n_test = max(1, int(round(len(idx) * test_fraction)))
    client_id = f'digits_{i:0{width}d}'
    test[client_id] = {'pixels': pixels[idx[:n_test]], 'label': labels[idx[:n_test]]}
    train[client_id] = {'pixels': pixels[idx[n_test:]], 'label': labels[idx[n_test:]]}
  return ClientData.from_clients_dict(train), ClientData.from_clients_dict(test)
