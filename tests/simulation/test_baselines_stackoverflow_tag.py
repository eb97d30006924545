"""TFF's StackOverflow tag preprocessing (simulation/baselines/stackoverflow/
tag_prediction_preprocessing.py) against a plain-Python re-derivation of TFF's pipeline."""

import numpy as np
import pytest

from fedjax_like.data import Dataset
from fedjax_like.simulation.baselines import ClientSpec
from fedjax_like.simulation.baselines.stackoverflow import tag_prediction_preprocessing as prep

WORDS = ['the', 'a', 'is', 'python', 'list']
TAGS = ['python', 'java', 'c++']
WHITESPACE = ' \t\n\x0b\x0c\r'


def reference(tokens: str, title: str, tags: str):
  text = tokens + ' ' + title
  words, current = [], ''
  for ch in text + ' ':  # tf.strings.split(): runs of ASCII whitespace separate, none kept
    if ch in WHITESPACE:
      if current:
        words.append(current)
      current = ''
    else:
      current += ch
  known = [w for w in words if w in WORDS]
  x = [known.count(w) / len(known) if known else 0.0 for w in WORDS]
  y = [float(sum(t == tag for t in tags.split('|'))) for tag in TAGS]
  return x, y


EXAMPLES = [
    ('the list is a list', 'python  list?', 'python|java'),
    ('unknown words only', '', 'c++|c++|rare'),  # No known word: all zeros; a tag twice: 2.
    ('a\tthe\nis', 'the\r\x0bpython', ''),  # Other whitespace separates too; empty tags.
    ('\u00e9t\u00e9 the', 'is', 'java|'),  # Non-ASCII words are words; a trailing '|'.
]


@pytest.mark.parametrize('batch_size', [1, 3])
def test_matches_tff_pipeline(batch_size):
  elements = {k: np.array([e[i].encode() for e in EXAMPLES], dtype=object)
              for i, k in enumerate(('tokens', 'title', 'tags'))}
  fn = prep.create_preprocess_fn(ClientSpec(1, batch_size, shuffle_buffer_size=1), WORDS, TAGS)
  batched = fn(Dataset(elements))
  x, y = batched.batches
  assert x.dtype == np.float32 and y.dtype == np.float32
  assert x.shape[1:] == (batch_size, 5) and y.shape[1:] == (batch_size, 3)
  expected = [reference(*e) for e in EXAMPLES]
  for (ex, ey), gx, gy in zip(expected, x[batched.mask], y[batched.mask], strict=True):
    np.testing.assert_allclose(gx, ex, rtol=1e-6)
    assert gy.tolist() == ey
  assert not x[~batched.mask].any() and not y[~batched.mask].any()


def test_bag_of_words_by_hand():
  x, y = prep.build_to_ids_fn(WORDS, TAGS)(b'the the list', b'zzz', b'java|python')
  np.testing.assert_allclose(x, [2 / 3, 0, 0, 0, 1 / 3])
  assert y.tolist() == [1.0, 1.0, 0.0]


def test_bad_vocabularies():
  with pytest.raises(ValueError, match='word_vocab'):
    prep.create_preprocess_fn(ClientSpec(1, 1), [], TAGS)
  with pytest.raises(ValueError, match='tag_vocab'):
    prep.create_preprocess_fn(ClientSpec(1, 1), WORDS, [])
