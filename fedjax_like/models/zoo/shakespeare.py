"""The Shakespeare next-character LSTM of TFF's baseline (McMahan et al. 2017; Reddi et al. 2020).

:class:`CharLSTM` is TFF's ``shakespeare.create_recurrent_model(vocab_size=90)``: an embedding of
the 90 token ids into 8 dimensions (Keras's uniform(-0.05, 0.05) initializer), two Keras LSTMs of
256 units with he-normal kernels (:class:`~fedjax_like.models.zoo.lstm.LSTM`), and a dense layer
to 90 logits (Glorot-uniform, no softmax). Parameters: 720 + 271,360 + 525,312 + 23,130 = 820,522.

:func:`shakespeare_char_lstm` wraps it with TFF's task loss and metrics: token cross-entropy
averaged over the tokens TFF's loss counts (see ``loss_mask``), ``num_tokens`` and ``accuracy``
over the non-pad targets (TFF's ``NumTokensCounter`` and ``MaskedCategoricalAccuracy`` with pad
0 masked). ``x`` and ``y`` are int32 ``[sequence_length]`` token ids.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_like.models import metrics
from fedjax_like.models.flax import from_linen
from fedjax_like.models.model import Model
from fedjax_like.models.zoo.lstm import LSTM, keras_uniform

VOCAB_LENGTH = 90  # 86 characters, pad 0, oov, bos, eos (TFF's char_prediction_tasks).
PAD_TOKEN = 0


class CharLSTM(nn.Module):
  """``tokens[B, T] -> logits[B, T, vocab_size]``."""

  vocab_size: int = VOCAB_LENGTH
  embedding_size: int = 8
  lstm_size: int = 256
  num_lstm_layers: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=keras_uniform())(x)
    for _ in range(self.num_lstm_layers):
      h = LSTM(self.lstm_size, kernel_init=nn.initializers.he_normal())(h)
    return nn.Dense(self.vocab_size, kernel_init=nn.initializers.glorot_uniform())(h)


def shakespeare_char_lstm(
    sequence_length: int = 80,
    vocab_size: int = VOCAB_LENGTH,
    loss_mask: str = 'inputs',
    embedding_size: int = 8,
    lstm_size: int = 256,
) -> Model:
  """TFF's Shakespeare character model with the task's loss and metrics.

  Args:
    sequence_length: tokens per example (TFF's default 80).
    vocab_size: the number of token ids (90).
    loss_mask: the positions the loss averages over (:func:`~fedjax_like.models.metrics.
      sequence_loss_mask`): ``'inputs'`` (TFF today: Keras's mask of the input, ``x != 0``),
      ``'targets'`` (``y != 0``) or ``'none'`` (every position, as Keras before late 2022).
    embedding_size, lstm_size: the layer sizes (TFF's 8 and 256).
  """
  if sequence_length < 1:
    raise ValueError(f'sequence_length must be a positive integer; got {sequence_length}.')
  token = jax.ShapeDtypeStruct((sequence_length,), jnp.int32)
  return from_linen(
      CharLSTM(vocab_size, embedding_size, lstm_size),
      input_spec=(token, token),
      loss_fn=metrics.masked_sequence_cross_entropy(loss_mask, PAD_TOKEN),
      metric_fns={
          'num_tokens': metrics.num_tokens([PAD_TOKEN]),
          'accuracy': metrics.masked_categorical_accuracy([PAD_TOKEN]),
      },
  )
