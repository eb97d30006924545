"""Krum and Multi-Krum against a NumPy reference: scores, selection, padding, NaN, poisoning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import KrumFactory

RNG = np.random.default_rng(3)


def make_values(num_clients):
  return {
      'w': RNG.normal(size=(num_clients, 3, 4)).astype(np.float32),
      'b': RNG.normal(size=(num_clients, 5)).astype(np.float32),
  }


def np_multi_krum(values, f, m, keep=None):
  """Plain loops, float64: Blanchard et al.'s scores over the kept clients, then the m best."""
  flat = np.concatenate([x.reshape(len(x), -1) for x in values.values()], 1).astype(np.float64)
  idx = [i for i in range(len(flat)) if keep is None or keep[i]]
  n = len(idx)
  scores = {}
  for i in idx:
    d = sorted(float(np.sum((flat[i] - flat[j]) ** 2)) for j in idx if j != i)
    scores[i] = sum(d[: max(n - f - 2, 1)])
  chosen = sorted(idx, key=lambda i: (scores[i], i))[:m]
  return {k: x[chosen].astype(np.float64).mean(0) for k, x in values.items()}, chosen, scores


@pytest.mark.parametrize('num_clients,f,m', [(7, 1, 1), (10, 2, 1), (10, 2, 4), (9, 0, 3)])
def test_multi_krum_matches_numpy(num_clients, f, m):
  values = make_values(num_clients)
  process = KrumFactory(f, num_selected=m).create(value_type_of(values))
  assert process.map_reduce is None and not process.is_weighted
  (result,), (measured,), _ = run_rounds(process, [values])
  expected, chosen, _ = np_multi_krum(values, f, m)
  for key in values:
    np.testing.assert_allclose(result[key], expected[key], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.flatnonzero(measured['selected']), sorted(chosen))
  assert int(measured['num_selected']) == m and int(measured['num_clients']) == num_clients


def test_scores_match_numpy():
  from fedjax_like.aggregators.krum import krum_scores, pairwise_sq_distances  # noqa: PLC0415

  values = make_values(8)
  _, _, expected = np_multi_krum(values, 2, 1)
  valid = jnp.ones(8, bool)
  got = jax.jit(lambda v: krum_scores(pairwise_sq_distances(v, valid), valid, 2))(values)
  np.testing.assert_allclose(np.asarray(got), [expected[i] for i in range(8)], rtol=1e-5)


def test_padding_and_non_finite_clients_are_never_selected_nor_neighbours():
  values = make_values(10)
  values['w'][1, 0, 0] = np.nan
  values['b'][4, 2] = np.inf
  mask = np.ones(10, bool)
  mask[8] = False  # padding, made the most central point so it would win if it counted
  values['w'][8], values['b'][8] = values['w'].mean(0), values['b'][~np.isinf(values['b'])
                                                                      .any(1)].mean(0)
  keep = mask & np.array([i not in (1, 4) for i in range(10)])
  process = KrumFactory(1, num_selected=2).create(value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values], mask=mask)
  expected, chosen, _ = np_multi_krum(values, 1, 2, keep=keep)
  for key in values:
    np.testing.assert_allclose(result[key], expected[key], rtol=1e-5, atol=1e-6)
  assert set(np.flatnonzero(measured['selected'])) == set(chosen)
  assert int(measured['num_clients']) == 7 and int(measured['num_clients_non_finite']) == 2


def test_krum_ignores_poisoned_clients_the_mean_does_not():
  clean = RNG.normal(loc=1.0, scale=0.1, size=(20, 50)).astype(np.float32)
  poisoned = clean.copy()
  poisoned[:4] = -100.0 * clean[:4]  # 20% scaled and sign-flipped
  values = {'x': poisoned}
  (result,), (measured,), _ = run_rounds(
      KrumFactory(4, num_selected=8).create(value_type_of(values)), [values])
  assert not measured['selected'][:4].any()
  assert np.abs(result['x'] - 1.0).max() < 0.2
  assert np.abs(poisoned.mean(0) - 1.0).min() > 10


def test_huge_attackers_do_not_blur_honest_distances():
  # A Gram matrix about the origin or the mean would lose the honest distances to cancellation.
  values = {'x': RNG.normal(scale=1e-3, size=(12, 30)).astype(np.float32)}
  values['x'][:2] = 1e6
  from fedjax_like.aggregators.krum import pairwise_sq_distances  # noqa: PLC0415

  x = values['x'].astype(np.float64)
  exact = ((x[:, None] - x[None]) ** 2).sum(-1)
  got = np.asarray(jax.jit(pairwise_sq_distances)(values, jnp.ones(12, bool)))
  np.testing.assert_allclose(got[2:, 2:], exact[2:, 2:], rtol=1e-4, atol=1e-9)
  (result,), (measured,), _ = run_rounds(KrumFactory(2).create(value_type_of(values)), [values])
  expected, chosen, _ = np_multi_krum(values, 2, 1)
  assert np.flatnonzero(measured['selected']).tolist() == chosen
  np.testing.assert_allclose(result['x'], expected['x'], rtol=1e-6)


def test_bad_arguments_and_too_small_cohorts():
  with pytest.raises(ValueError, match='num_byzantine must be at least 0'):
    KrumFactory(-1)
  with pytest.raises(ValueError, match='num_selected must be at least 1'):
    KrumFactory(1, num_selected=0)
  with pytest.raises(TypeError, match='needs floating-point values'):
    KrumFactory(1).create(jax.ShapeDtypeStruct((2,), jnp.int32))
  values = make_values(6)
  with pytest.raises(ValueError, match=r'more than 2f \+ 2 = 6 clients per round; the cohort has'):
    run_rounds(KrumFactory(2).create(value_type_of(values)), [values])
