"""Tiny federated datasets in TFF's published formats, for the baseline tasks and the driver.

Each ``write_*`` function writes the file TFF's loader (and ours) reads into ``directory``, with a
few clients of seeded random content, and returns the examples written as
``{split: {client_id: [example dict, ...]}}`` so tests can re-derive what the tasks make of them.
Built on the independent encoders of tests/data/tff_files.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'data'))
from tff_files import encode_example, write_sql_client_data  # noqa: E402

SO_WORDS = ['the', 'a', 'is', 'to', 'in', 'of', 'and', 'it', 'i', 'you']
SO_TAGS = {'python': 9, 'java': 7, 'c++': 5, 'sql': 3, 'git': 1}


def write_shakespeare(directory, num_clients: int = 3, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  chars = "abcdefghij ABC,.;!?'\n"
  data = {}
  for split in ('train', 'test'):
    data[split] = {}
    for c in range(num_clients):
      snippets = []
      for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(0, 120))
        snippets.append(''.join(rng.choice(list(chars), size=n)).encode())
      data[split][f'ROLE_{c}'] = [{'snippets': s} for s in snippets]
  rows = {s: {c: [encode_example({'snippets': ('bytes', [e['snippets']])}) for e in ex]
              for c, ex in cl.items()} for s, cl in data.items()}
  write_sql_client_data(os.path.join(directory, 'shakespeare.sqlite'), rows)
  return data


def write_stackoverflow(directory, num_clients: int = 3, seed: int = 0) -> dict:
  """stackoverflow.sqlite (train/heldout/test) and the extracted side files."""
  rng = np.random.default_rng(seed)
  words = SO_WORDS + ['zebra', 'qux', '']  # out of vocabulary ('' from a double space)
  data = {}
  for split in ('train', 'heldout', 'test'):
    data[split] = {}
    for c in range(num_clients):
      examples = []
      for _ in range(int(rng.integers(1, 6))):
        tokens = ' '.join(rng.choice(words, size=int(rng.integers(1, 30))))
        title = ' '.join(rng.choice(words, size=int(rng.integers(0, 5))))
        tags = '|'.join(rng.choice(list(SO_TAGS) + ['rare-tag'], size=int(rng.integers(1, 4))))
        examples.append({'creation_date': b'2010-01-08 09:34:05 UTC', 'score': 3,
                         'tags': tags.encode(), 'title': title.encode(),
                         'tokens': tokens.encode(), 'type': b'question'})
      data[split][f'{100 + c}'] = examples

  def encode(e):
    return encode_example({k: ('int64', [v]) if k == 'score' else ('bytes', [v])
                           for k, v in e.items()})

  rows = {s: {c: [encode(e) for e in ex] for c, ex in cl.items()} for s, cl in data.items()}
  write_sql_client_data(os.path.join(directory, 'stackoverflow.sqlite'), rows)
  with open(os.path.join(directory, 'stackoverflow.word_count'), 'w') as f:
    f.writelines(f'{w} {100 - i}\n' for i, w in enumerate(SO_WORDS))
  with open(os.path.join(directory, 'stackoverflow.tag_count'), 'w') as f:
    json.dump(SO_TAGS, f)
  return data


def write_cifar100(directory, num_clients: int = 3, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  data = {}
  for split in ('train', 'test'):
    data[split] = {}
    for c in range(num_clients):
      data[split][str(c)] = [
          {'coarse_label': int(rng.integers(20)),
           'image': rng.integers(0, 256, size=(32, 32, 3)),
           'label': int(rng.integers(100))}
          for _ in range(int(rng.integers(2, 7)))]

  def encode(e):
    return encode_example({'coarse_label': ('int64', [e['coarse_label']]),
                           'image': ('int64', e['image'].reshape(-1).tolist()),
                           'label': ('int64', [e['label']])})

  rows = {s: {c: [encode(e) for e in ex] for c, ex in cl.items()} for s, cl in data.items()}
  write_sql_client_data(os.path.join(directory, 'cifar100.sqlite'), rows)
  return data


def write_emnist(directory, num_clients: int = 3, seed: int = 0) -> dict:
  """emnist_all.sqlite with the four splits TFF's file has."""
  rng = np.random.default_rng(seed)
  data = {}
  for split, classes in (('digits_only_train', 10), ('digits_only_test', 10),
                         ('all_train', 62), ('all_test', 62)):
    data[split] = {}
    for c in range(num_clients):
      data[split][f'f{c:04d}_00'] = [
          {'label': int(rng.integers(classes)),
           'pixels': rng.random((28, 28)).astype(np.float32)}
          for _ in range(int(rng.integers(2, 8)))]

  def encode(e):
    return encode_example({'label': ('int64', [e['label']]),
                           'pixels': ('float', e['pixels'].reshape(-1).tolist())})

  rows = {s: {c: [encode(e) for e in ex] for c, ex in cl.items()} for s, cl in data.items()}
  write_sql_client_data(os.path.join(directory, 'emnist_all.sqlite'), rows)
  return data
