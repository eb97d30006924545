"""FedAvg against a plain NumPy reference, strategy equivalence, padding invariance, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedjax_like as fl
from fedjax_like.core import cohort
from fedjax_like.data import Dataset, pack_cohort

NUM_FEATURES, NUM_CLASSES, BATCH = 12, 5, 4


def make_clients(sizes, seed=0):
  rng = np.random.default_rng(seed)
  datasets = []
  for i, n in enumerate(sizes):
    x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
    datasets.append(Dataset((x, y), client_id=f'client_{i}'))
  return datasets


def dense_model(zero_init=True):
  init = nn.initializers.zeros if zero_init else nn.initializers.lecun_normal()
  module = nn.Dense(NUM_CLASSES, kernel_init=init, bias_init=nn.initializers.zeros)
  spec = (
      jax.ShapeDtypeStruct((NUM_FEATURES,), jnp.float32),
      jax.ShapeDtypeStruct((), jnp.int32),
  )
  return fl.models.from_linen(module, spec)


# ----- the independent reference: plain NumPy loops, float64 -------------------------------------


def np_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def reference_fed_avg(clients, w0, b0, rounds, lr, momentum=0.0, weighted=True, repeat=1):
  """Sequential clients, batches in order, deltas averaged, server SGD at 1.0."""
  w, b = w0.astype(np.float64), b0.astype(np.float64)
  history = []
  for _ in range(rounds):
    deltas, weights = [], []
    loss_sum = correct = total = 0.0
    for x, y in clients:
      x = np.concatenate([x] * repeat).astype(np.float64)
      y = np.concatenate([y] * repeat)
      cw, cb = w.copy(), b.copy()
      vw, vb = np.zeros_like(cw), np.zeros_like(cb)
      for start in range(0, len(x), BATCH):
        xb, yb = x[start : start + BATCH], y[start : start + BATCH]
        p = np_softmax(xb @ cw + cb)
        loss_sum += -np.log(p[np.arange(len(yb)), yb]).sum()
        correct += (p.argmax(axis=1) == yb).sum()
        total += len(yb)
        g = p.copy()
        g[np.arange(len(yb)), yb] -= 1.0
        g /= len(yb)
        gw, gb = xb.T @ g, g.sum(axis=0)
        vw, vb = momentum * vw + gw, momentum * vb + gb
        cw, cb = cw - lr * vw, cb - lr * vb
      deltas.append((cw - w, cb - b))
      weights.append(len(x) if weighted else 1.0)
    weights = np.array(weights, dtype=np.float64)
    w = w + sum(p * d[0] for p, d in zip(weights, deltas)) / weights.sum()
    b = b + sum(p * d[1] for p, d in zip(weights, deltas)) / weights.sum()
    history.append((w.copy(), b.copy(), correct / total, loss_sum / total, total))
  return history


def run_process(process, datasets, rounds, repeat=1):
  batched = [d.repeat(repeat).batch(BATCH) for d in datasets]
  state = process.initialize()
  history = []
  for _ in range(rounds):
    state, metrics = process.next(state, batched)
    params = state.global_model_weights.trainable
    train = metrics['client_work']['train']
    history.append(
        (
            np.asarray(params['kernel']),
            np.asarray(params['bias']),
            float(train['accuracy']),
            float(train['loss']),
            int(train['num_examples']),
        )
    )
  return history, state, metrics


def assert_history_close(history, reference):
  for got, want in zip(history, reference, strict=True):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-5, atol=1e-5)
    assert got[4] == want[4]


SIZES = [7, 13, 4, 10]  # ragged last batches (batch 4), different client sizes


@pytest.mark.parametrize(
    'weighted,momentum,zero_init',
    [(True, 0.0, True), (False, 0.0, True), (True, 0.9, True), (True, 0.0, False)],
    ids=['weighted', 'unweighted', 'momentum', 'random-init'],
)
def test_fed_avg_matches_numpy_reference(weighted, momentum, zero_init):
  model = dense_model(zero_init)
  datasets = make_clients(SIZES)
  client_opt = fl.learning.optimizers.build_sgdm(0.1, momentum=momentum or None)
  build = (
      fl.learning.algorithms.build_weighted_fed_avg
      if weighted
      else fl.learning.algorithms.build_unweighted_fed_avg
  )
  process = build(model, client_optimizer_fn=client_opt)
  history, _, metrics = run_process(process, datasets, rounds=5)
  init = process.initialize().global_model_weights.trainable
  reference = reference_fed_avg(
      [d.elements for d in datasets],
      np.asarray(init['kernel']),
      np.asarray(init['bias']),
      rounds=5,
      lr=0.1,
      momentum=momentum,
      weighted=weighted,
  )
  assert_history_close(history, reference)
  assert set(metrics) == {'distributor', 'client_work', 'aggregator', 'finalizer'}
  assert int(metrics['client_work']['train']['num_batches']) == sum(-(-n // BATCH) for n in SIZES)
  assert int(metrics['finalizer']['update_non_finite']) == 0


def test_fed_avg_with_repeat_like_the_quickstart():
  model = dense_model()
  datasets = make_clients([5, 9, 3])
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  history, _, _ = run_process(process, datasets, rounds=3, repeat=3)
  init = process.initialize().global_model_weights.trainable
  reference = reference_fed_avg(
      [d.elements for d in datasets],
      np.asarray(init['kernel']),
      np.asarray(init['bias']),
      rounds=3,
      lr=0.1,
      repeat=3,
  )
  assert_history_close(history, reference)


def test_fed_avg_m_server_momentum_matches_reference():
  # FedAvgM: server SGD with momentum is the reference's averaged delta fed to heavy-ball SGD.
  model = dense_model()
  datasets = make_clients(SIZES)
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model,
      fl.learning.optimizers.build_sgdm(0.1),
      server_optimizer_fn=fl.learning.optimizers.build_sgdm(1.0, momentum=0.5),
  )
  history, _, _ = run_process(process, datasets, rounds=3)
  # Reference: recompute deltas per round from the reference's own weights with server momentum.
  w = np.zeros((NUM_FEATURES, NUM_CLASSES))
  b = np.zeros(NUM_CLASSES)
  vw, vb = np.zeros_like(w), np.zeros_like(b)
  for r in range(3):
    one = reference_fed_avg([d.elements for d in datasets], w, b, rounds=1, lr=0.1)[0]
    dw, db = one[0] - w, one[1] - b  # the averaged delta of this round
    vw, vb = 0.5 * vw - dw, 0.5 * vb - db  # server gradient is -delta
    w, b = w - vw, b - vb
    np.testing.assert_allclose(history[r][0], w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(history[r][1], b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(history[r][2:4], one[2:4], rtol=1e-5, atol=1e-5)  # accuracy, loss
    assert history[r][4] == one[4]


@pytest.mark.parametrize(
    'strategy,chunk',
    [('sequential', None), ('chunked', 3), ('chunked', 1), ('vmap', None), ('lanes', None)],
)
def test_every_strategy_equals_sequential_one_client_at_a_time(strategy, chunk):
  model = dense_model(zero_init=False)
  datasets = make_clients([7, 13, 4, 10, 5])
  opt = fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)

  # One client at a time, through the public API: each round's mean of single-client deltas.
  def run_with(strategy_name, chunk_size):
    with cohort.execution(strategy_name, chunk_size=chunk_size):
      process = fl.learning.algorithms.build_weighted_fed_avg(model, opt)
      return run_process(process, datasets, rounds=3)[0]

  baseline = run_with('sequential', None)
  got = run_with(strategy, chunk)
  for g, b in zip(got, baseline):
    for a, c in zip(g, b):
      np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_vmapped_cohort_equals_clients_run_one_at_a_time():
  # Run each client alone (a cohort of one) and average by hand: same as the vmapped cohort.
  model = dense_model(zero_init=False)
  datasets = make_clients([6, 11, 3])
  opt = fl.learning.optimizers.build_sgdm(0.1)
  process = fl.learning.algorithms.build_weighted_fed_avg(model, opt)
  state = process.initialize()
  w0 = state.global_model_weights.trainable
  batched = [d.batch(BATCH) for d in datasets]
  together, _ = process.next(state, batched)
  deltas, counts = [], []
  for d in batched:
    alone, m = process.next(state, [d])
    deltas.append(jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), alone.global_model_weights.trainable, w0))
    counts.append(int(m['client_work']['train']['num_examples']))
  expected = jax.tree.map(
      lambda w, *ds: np.asarray(w) + sum(c * d for c, d in zip(counts, ds)) / sum(counts), w0, *deltas
  )
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      together.global_model_weights.trainable,
      expected,
  )


def test_padding_steps_change_nothing():
  model = dense_model(zero_init=False)
  datasets = make_clients([7, 13, 4])
  opt = fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)
  process = fl.learning.algorithms.build_weighted_fed_avg(model, opt)
  state = process.initialize()
  batched = [d.batch(BATCH) for d in datasets]
  tight = pack_cohort(batched)
  padded = pack_cohort(batched, num_steps=tight.num_steps + 5)
  assert padded.padding_fraction > tight.padding_fraction
  s1, m1 = process.next(state, tight)
  s2, m2 = process.next(state, padded)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      s1.global_model_weights,
      s2.global_model_weights,
  )
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), m1, m2)


def test_non_finite_client_is_dropped_and_counted():
  model = dense_model()
  datasets = make_clients([6, 8])
  # A learning rate that overflows on the first client only would be fragile; instead poison the
  # data through a loss that is NaN for one client: huge inputs overflow the float32 softmax.
  x, y = datasets[1].elements
  datasets[1] = Dataset((x * 1e38, y), client_id='client_1')
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  state = process.initialize()
  new_state, metrics = process.next(state, [d.batch(BATCH) for d in datasets])
  assert int(metrics['aggregator']['num_clients_non_finite']) == 1
  alone, _ = process.next(state, [datasets[0].batch(BATCH)])
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      new_state.global_model_weights,
      alone.global_model_weights,
  )


# ----- bad input: clear errors naming the client and the field ----------------------------------


def test_error_element_shape_mismatch_names_client_and_field():
  model = dense_model()
  x = np.zeros((5, NUM_FEATURES + 1), np.float32)
  bad = Dataset((x, np.zeros(5, np.int32)), client_id='alice').batch(BATCH)
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  with pytest.raises(ValueError, match=r"alice.*field x.*shape \(13,\).*\(12,\)"):
    process.next(process.initialize(), [bad])


def test_error_dtype_mismatch_names_client_and_field():
  model = dense_model()
  x = np.zeros((5, NUM_FEATURES), np.float32)
  bad = Dataset((x, np.zeros(5, np.float32)), client_id='bob').batch(BATCH)
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  with pytest.raises(TypeError, match=r'bob.*field y.*float32.*int32'):
    process.next(process.initialize(), [bad])


def test_error_empty_client():
  model = dense_model()
  good = make_clients([5])[0].batch(BATCH)
  empty = Dataset(
      (np.zeros((0, NUM_FEATURES), np.float32), np.zeros(0, np.int32)), client_id='carol'
  ).batch(BATCH)
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  with pytest.raises(ValueError, match='carol has no examples'):
    process.next(process.initialize(), [good, empty])


def test_error_label_out_of_range():
  model = dense_model()
  datasets = make_clients([5, 6])
  x, y = datasets[1].elements
  y = y.copy()
  y[2] = NUM_CLASSES + 3
  datasets[1] = Dataset((x, y), client_id='dave')
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  with pytest.raises(ValueError, match=r'dave.*labels \[8\] are outside \[0, 5\)'):
    process.next(process.initialize(), [d.batch(BATCH) for d in datasets])


def test_error_nan_pixels():
  model = dense_model()
  datasets = make_clients([5, 6])
  x, y = datasets[0].elements
  x = x.copy()
  x[3, 1] = np.nan
  datasets[0] = Dataset((x, y), client_id='erin')
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  with pytest.raises(ValueError, match='erin.*NaN'):
    process.next(process.initialize(), [d.batch(BATCH) for d in datasets])


def test_error_wrong_optimizer_and_single_dataset():
  model = dense_model()
  with pytest.raises(TypeError, match='client_optimizer_fn'):
    fl.learning.algorithms.build_weighted_fed_avg(model, client_optimizer_fn=0.1)
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  with pytest.raises(TypeError, match='Wrap it in a list'):
    process.next(process.initialize(), make_clients([5])[0].batch(BATCH))


def test_get_and_set_model_weights_round_trip():
  model = dense_model()
  process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
  state = process.initialize()
  weights = process.get_model_weights(state)
  bumped = jax.tree.map(lambda a: a + 1.0, weights)
  new_state = process.set_model_weights(state, bumped)
  np.testing.assert_array_equal(
      process.get_model_weights(new_state).trainable['bias'], np.ones(NUM_CLASSES)
  )
  with pytest.raises(ValueError, match='structure'):
    process.set_model_weights(state, {'w': 1.0})


class _SmallCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3), padding='SAME')(x[..., None]))
    x = nn.relu(nn.Conv(16, (3, 3), padding='VALID')(x))
    return nn.Dense(NUM_CLASSES)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize(
    'strategy,lowering',
    [('vmap', 'native'), ('chunked', 'native'), ('sequential', 'im2col'), ('vmap', 'xla'),
     ('lanes', 'native')],
)
def test_a_cnn_gives_the_same_rounds_under_every_strategy_and_lowering(strategy, lowering):
  """On CPU convolutions run on the native kernels by default (one FFI call per client under
  vmap); every strategy and lowering gives sequential + native's rounds to 1e-5."""
  spec = (jax.ShapeDtypeStruct((6, 6), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(_SmallCNN(), spec)
  rng = np.random.default_rng(3)
  datasets = [
      Dataset((rng.normal(size=(n, 6, 6)).astype(np.float32),
               rng.integers(0, NUM_CLASSES, n).astype(np.int32)))
      for n in (9, 3, 14, 6)
  ]
  opt = fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)

  def run_with(strategy_name, conv_lowering):
    with cohort.execution(strategy_name, chunk_size=3, conv_lowering=conv_lowering):
      process = fl.learning.algorithms.build_weighted_fed_avg(model, opt)
      state, history = process.initialize(), []
      for _ in range(2):
        state, metrics = process.next(state, [d.batch(BATCH) for d in datasets])
        history.append((state.global_model_weights.trainable, metrics['client_work']['train']))
      return history, process._last_compiled.as_text()

  baseline, program = run_with('sequential', 'native')
  assert 'fjl_conv2d' in program  # the kernels did run
  got, _ = run_with(strategy, lowering)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, baseline)
