"""Federated analytics on a synthetic population of 1,000 clients, against exact central answers.

Every client holds a ragged list of items (an item mask marks real ones) and the cohort is padded
to 1,024 clients whose garbage rows a client mask hides. The NumPy references pool exactly what the
clients are allowed to contribute (their first ``k`` (distinct) real items) and compute the answer
centrally. Error bounds, and why they hold:

- histogram, mean: exact (integer counts; float32 sums to 1e-5 relative);
- quantiles: binary search over ``(a, b)`` for ``R`` rounds is within ``(b - a) / 2**R`` of the
  inverted-CDF quantile (the true quantile stays inside the halved interval; see
  ``analytics/quantiles.py``), plus 1e-6 for float32 midpoints;
- trie heavy hitters: counts are exact and the top 10 exact whenever, at every prefix length, at
  most ``capacity`` prefixes reach the 10th count (the test checks that precondition on the data);
- count sketch: each estimate is within ``eps = 3 ||c||_2 / sqrt(width)`` except with small
  probability (Chebyshev per row, median of 7 rows); the population puts a gap larger than ``2 eps``
  between the 10th and 11th counts, so the top 10 are exact (the test checks the gap).
"""

import collections

import numpy as np
import pytest

from fedjax_like import analytics
from fedjax_like.core import CLIENTS, cohort, federated_computation

NUM_CLIENTS, PADDED, MAX_ITEMS = 1000, 1024, 16
client_mask = np.arange(PADDED) < NUM_CLIENTS


def ragged_mask(rng, low=0, high=MAX_ITEMS):
  sizes = rng.integers(low, high + 1, size=PADDED)
  return np.arange(MAX_ITEMS)[None, :] < sizes[:, None]


def first_k(mask, k):
  return mask & (np.cumsum(mask, axis=1) <= k) if k else mask


@pytest.fixture(scope='module')
def numeric_population():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(PADDED, 1))
  values = (centers + rng.normal(size=(PADDED, MAX_ITEMS))).astype(np.float32)
  mask = ragged_mask(rng)
  values[NUM_CLIENTS:] = 1e9  # padding clients: garbage that must not count
  values[0, :] = 1e4  # one prolific outlier client
  mask[0] = True
  return values, mask


@federated_computation(CLIENTS, CLIENTS)
def numeric_statistics(values, mask):
  edges = np.linspace(-4.0, 4.0, 17)
  return {
      'histogram': analytics.federated_histogram(values, edges, mask, max_items_per_client=5),
      'histogram_unclipped': analytics.federated_histogram(values, edges, mask),
      'mean': analytics.federated_item_mean(
          values, mask, clip_range=(-3.0, 3.0), max_items_per_client=5
      ),
      'mean_unclipped': analytics.federated_item_mean(values, mask),
      'quantiles': analytics.federated_quantiles(
          values, QUANTILES, (-8.0, 8.0), mask, num_rounds=20, max_items_per_client=5
      ),
  }


QUANTILES = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]


def test_histogram_mean_and_quantiles_match_centralized_answers(numeric_population):
  values, mask = numeric_population
  out = numeric_statistics(values, mask, client_mask=client_mask)
  real = client_mask[:, None]
  clipped = values[first_k(mask, 5) & real].astype(np.float64)
  everything = values[mask & real].astype(np.float64)
  edges = np.linspace(-4.0, 4.0, 17)

  np.testing.assert_array_equal(out['histogram'], np.histogram(np.clip(clipped, -4, 4), edges)[0])
  unclipped = np.histogram(np.clip(everything, -4, 4), edges)[0]
  np.testing.assert_array_equal(out['histogram_unclipped'], unclipped)
  np.testing.assert_allclose(out['mean'], np.clip(clipped, -3, 3).mean(), rtol=1e-5)
  np.testing.assert_allclose(out['mean_unclipped'], everything.mean(), rtol=1e-5)
  # Client-level clipping bounds the outlier client's pull on the mean: at most 5 values of |3|.
  assert float(out['mean_unclipped']) > 10.0
  assert abs(float(out['mean'])) < 0.1

  bound = analytics.quantile_error_bound((-8.0, 8.0), 20) + 1e-6
  pooled = np.clip(clipped.astype(np.float32), -8, 8)
  for q, estimate in zip(QUANTILES, np.asarray(out['quantiles'])):
    # The inverted-CDF quantile; q +- 1e-9 brackets it when q * N falls exactly on a count.
    low = np.quantile(pooled, q - 1e-9, method='inverted_cdf')
    high = np.quantile(pooled, q + 1e-9, method='inverted_cdf')
    assert low - bound <= estimate <= high + bound, (q, estimate, low, high, bound)


def test_quantile_error_halves_with_each_round(numeric_population):
  values, mask = numeric_population
  pooled = values[mask & client_mask[:, None]]

  @federated_computation(CLIENTS, CLIENTS)
  def median(values, mask):
    return analytics.federated_quantiles(values, [0.5], (-64.0, 64.0), mask, num_rounds=6)

  estimate = float(median(values, mask, client_mask=client_mask)[0])
  truth = np.quantile(pooled, 0.5, method='inverted_cdf')
  assert abs(estimate - truth) <= analytics.quantile_error_bound((-64.0, 64.0), 6)  # 2.0


# ----- heavy hitters ------------------------------------------------------------------------------

ALPHABET = 'abcdefghij'
MAX_LENGTH, K_ITEMS, CAPACITY = 8, 8, 32


def distinct_first_k(rows, k):
  seen = []
  for item in rows:
    if item not in seen:
      seen.append(item)
  return seen[:k]


@pytest.fixture(scope='module')
def word_population():
  rng = np.random.default_rng(1)
  vocabulary = sorted({
      ''.join(rng.choice(list(ALPHABET), size=rng.integers(1, MAX_LENGTH + 1))) for _ in range(600)
  })
  rng.shuffle(vocabulary)
  popularity = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.1
  popularity /= popularity.sum()
  mask = ragged_mask(rng, low=1)
  words = [list(rng.choice(vocabulary, size=int(m.sum()), p=popularity)) for m in mask]
  codes = np.zeros((PADDED, MAX_ITEMS, MAX_LENGTH), np.int32)
  for i, client_words in enumerate(words):
    codes[i, : len(client_words)] = analytics.encode_strings(client_words, MAX_LENGTH, ALPHABET)
  codes[NUM_CLIENTS:] = 3  # padding clients all hold 'cccccccc'
  counts = collections.Counter()
  for client_words in words[:NUM_CLIENTS]:
    counts.update(distinct_first_k(client_words, K_ITEMS))
  return codes, mask, counts


def prefix_votes(counts, length):
  """Votes at round ``length``: contributed strings longer than ``length`` by their prefix."""
  votes = collections.Counter()
  for word, n in counts.items():
    if len(word) > length:
      votes[word[: length + 1]] += n
  return votes


def test_trie_heavy_hitters_find_the_exact_top_10(word_population):
  codes, mask, counts = word_population
  top = counts.most_common(11)
  tenth = top[9][1]
  assert tenth > top[10][1], 'the population must have a unique top 10'
  for length in range(MAX_LENGTH):  # the precondition of exactness (see heavy_hitters.py)
    assert sum(v >= tenth for v in prefix_votes(counts, length).values()) <= CAPACITY

  @federated_computation(CLIENTS, CLIENTS)
  def heavy_hitters(strings, mask):
    return analytics.federated_heavy_hitters(
        strings, mask, k=10, alphabet_size=len(ALPHABET) + 1, capacity=CAPACITY,
        max_items_per_client=K_ITEMS,
    )

  out = heavy_hitters(codes, mask, client_mask=client_mask)
  found = dict(zip(analytics.decode_strings(out.items, ALPHABET), np.asarray(out.counts).tolist()))
  assert found == dict(top[:10])
  assert np.all(out.valid)


def test_count_sketch_heavy_hitters_find_the_exact_top_10():
  rng = np.random.default_rng(2)
  domain, width = 5000, 2048
  planted = rng.choice(domain, size=10, replace=False)
  share = np.linspace(0.15, 0.4, 10)
  mask = ragged_mask(rng, low=1)
  items = rng.integers(0, domain, size=(PADDED, MAX_ITEMS)).astype(np.int32)  # a long tail
  for j in range(10):
    holders = rng.uniform(size=PADDED) < share[j]
    items[holders, j] = planted[j]
  mask[:, :10] = True
  items[NUM_CLIENTS:] = planted[0]  # padding clients would inflate the top item
  counts = collections.Counter()
  for row in items[:NUM_CLIENTS]:
    counts.update(distinct_first_k(list(row), MAX_ITEMS))
  truth = counts.most_common(11)
  eps = analytics.count_sketch_error_bound(np.sqrt(sum(c**2 for c in counts.values())), width)
  assert truth[9][1] - truth[10][1] > 2 * eps  # the gap that makes the top 10 exact

  @federated_computation(CLIENTS, CLIENTS)
  def sketch(items, mask):
    return analytics.count_sketch_heavy_hitters(items, mask, domain_size=domain, k=10, width=width)

  with cohort.execution('chunked', chunk_size=128):
    out = sketch(items, mask, client_mask=client_mask)
  assert set(np.asarray(out.items).tolist()) == {item for item, _ in truth[:10]}
  for item, estimate in zip(np.asarray(out.items), np.asarray(out.estimates)):
    assert abs(estimate - counts[int(item)]) <= eps
  assert out.sketch.shape == (7, width)


def test_contribution_bounding_is_first_k_distinct():
  items = np.array([[3, 3, 5, 7, 5, 9]])
  keep = np.array([[True, True, True, False, True, True]])
  bounded = analytics.bound_contributions(items[0], keep[0], max_items=2, distinct=True)
  np.testing.assert_array_equal(bounded, [True, False, True, False, False, False])
  with pytest.raises(ValueError, match='not in the alphabet'):
    analytics.encode_strings(['abz'], 4, 'ab')


def test_quantile_at_a_whole_rank_and_histogram_edges_not_representable_in_float32():
  from fractions import Fraction

  from fedjax_like.analytics import federated_histogram, federated_quantiles
  from fedjax_like.core import CLIENTS, FederatedValue

  data = np.arange(1, 101, dtype=np.float32)
  values = FederatedValue(data.reshape(100, 1), CLIENTS)
  levels = ['0.3', '0.6', '0.55', '0.01']
  got = federated_quantiles(values, [float(q) for q in levels], value_range=(0, 101), num_rounds=30)
  # Exact inverted-CDF reference in rational arithmetic: the ceil(q * N)-th smallest value.
  ranks = [-(-Fraction(q) * 100 // 1) for q in levels]
  expected = [np.sort(data)[int(r) - 1] for r in ranks]
  np.testing.assert_allclose(got.value, expected, atol=1e-5)

  edges = [0.0, 0.7, 1.0]  # 0.7 is not a float32: np.histogram compares in float64
  pooled = np.array([0.7, 0.2, 0.69999999, 1.0], np.float32)
  hist = federated_histogram(FederatedValue(pooled.reshape(1, 4), CLIENTS), edges)
  np.testing.assert_array_equal(hist.value, np.histogram(pooled, edges)[0])
