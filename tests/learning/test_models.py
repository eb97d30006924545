"""``fl.learning.models`` gives TFF's model names, the same objects as ``fl.models``."""

import jax

import fedjax_like as fl


def test_tff_names_are_the_models_objects():
  assert fl.learning.models.ModelWeights is fl.models.ModelWeights
  assert fl.learning.models.FunctionalModel is fl.models.Model
  assert fl.learning.models.from_linen is fl.models.from_linen
  weights = fl.learning.models.ModelWeights(trainable={'w': 1.0}, non_trainable={})
  assert weights.trainable == {'w': 1.0}


def test_the_documented_initialize_type_signature():
  """TFF's ``process.initialize.type_signature``, as the README writes its equivalent."""
  model = fl.models.zoo.logistic_regression(num_classes=10)
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1)
  )
  text = str(fl.core.type_at_server(jax.eval_shape(process.initialize)))
  assert text.startswith('<global_model_weights=<trainable=') and text.endswith('>@SERVER')
  assert 'float32[784,10]' in text
