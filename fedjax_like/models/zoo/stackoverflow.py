"""The StackOverflow models of TFF's baselines (Reddi et al. 2020): next-word LSTM, tag regression.

:class:`WordLSTM` is TFF's ``stackoverflow.create_recurrent_model(vocab_size)`` with its defaults:
an embedding into 96 dimensions (Keras's uniform(-0.05, 0.05)), one Keras LSTM of 670 units, a
dense projection back to 96, and a dense layer to ``vocab_size`` logits (Glorot-uniform, no
softmax). With TFF's 10,000 words, 1 out-of-vocabulary bucket, pad, bos and eos, the vocabulary
is 10,004 ids and the model has 960,384 + 2,055,560 + 64,416 + 970,388 = 4,050,748 parameters.
(TFF's ``shared_embedding`` variant, tying the output layer to the embedding, is not provided.)

:func:`stackoverflow_word_lstm` adds TFF's task loss and metrics: token cross-entropy averaged
over the tokens TFF's loss counts (``loss_mask``), ``num_tokens`` (non-pad targets), ``accuracy``
(pad masked), ``accuracy_without_out_of_vocab`` (pad and the oov ids masked) and
``accuracy_without_out_of_vocab_or_end_of_sentence`` (pad, eos and oov masked). The special ids are
TFF's: pad 0, words 1..V, oov V+1..V+B, bos V+B+1, eos V+B+2 (:func:`special_tokens`).

:class:`TagLogisticRegression` is TFF's tag model, ``Dense(num_tags, activation='sigmoid')`` on the
bag of words (10,000 x 500 + 500 = 5,000,500 parameters); it outputs the logits, whose sigmoid is
TFF's output. :func:`stackoverflow_tag_lr` uses TFF's loss, ``BinaryCrossentropy`` summed over the
batch (``loss_reduction='sum'``: each example's loss is the mean over its tags), and its metrics
``precision`` and ``recall_at_5``.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_like.models import metrics
from fedjax_like.models.flax import from_linen
from fedjax_like.models.model import Model
from fedjax_like.models.zoo.lstm import LSTM, keras_uniform

_GLOROT = nn.initializers.glorot_uniform()


class SpecialTokens(NamedTuple):
  """TFF's special token ids for a vocabulary of ``V`` words and ``B`` oov buckets."""

  padding: int
  out_of_vocab: list[int]
  beginning_of_sentence: int
  end_of_sentence: int

  def get_number_of_special_tokens(self) -> int:
    return 3 + len(self.out_of_vocab)


def special_tokens(vocab_size: int, num_out_of_vocab_buckets: int = 1) -> SpecialTokens:
  """Pad 0, oov ``V+1..V+B``, bos ``V+B+1``, eos ``V+B+2`` (TFF's ``get_special_tokens``)."""
  return SpecialTokens(
      padding=0,
      out_of_vocab=[vocab_size + 1 + n for n in range(num_out_of_vocab_buckets)],
      beginning_of_sentence=vocab_size + num_out_of_vocab_buckets + 1,
      end_of_sentence=vocab_size + num_out_of_vocab_buckets + 2,
  )


class WordLSTM(nn.Module):
  """``tokens[B, T] -> logits[B, T, vocab_size]`` (``vocab_size`` counts the special ids)."""

  vocab_size: int
  embedding_size: int = 96
  lstm_size: int = 670
  num_lstm_layers: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Embed(self.vocab_size, self.embedding_size, embedding_init=keras_uniform())(x)
    for _ in range(self.num_lstm_layers):
      h = LSTM(self.lstm_size)(h)
      h = nn.Dense(self.embedding_size, kernel_init=_GLOROT)(h)
    return nn.Dense(self.vocab_size, kernel_init=_GLOROT)(h)


def stackoverflow_word_lstm(
    vocab_size: int = 10_000,
    num_out_of_vocab_buckets: int = 1,
    sequence_length: int = 20,
    loss_mask: str = 'inputs',
    embedding_size: int = 96,
    lstm_size: int = 670,
) -> Model:
  """TFF's StackOverflow next-word model with the task's loss and metrics.

  Args:
    vocab_size: words in the vocabulary (the model has ``vocab_size + B + 3`` outputs).
    num_out_of_vocab_buckets: ``B``, the oov ids.
    sequence_length: tokens per example (TFF's default 20).
    loss_mask: the positions the loss averages over: ``'inputs'`` (TFF today, Keras's mask of the
      input), ``'targets'`` or ``'none'`` (see
      :func:`~fedjax_like.models.metrics.sequence_loss_mask`).
    embedding_size, lstm_size: the layer sizes (TFF's 96 and 670).
  """
  for name, value in (('vocab_size', vocab_size), ('sequence_length', sequence_length),
                      ('num_out_of_vocab_buckets', num_out_of_vocab_buckets)):
    if value < 1:
      raise ValueError(f'{name} must be a positive integer; got {value}.')
  tokens = special_tokens(vocab_size, num_out_of_vocab_buckets)
  pad, oov, eos = tokens.padding, tokens.out_of_vocab, tokens.end_of_sentence
  spec = jax.ShapeDtypeStruct((sequence_length,), jnp.int32)
  return from_linen(
      WordLSTM(vocab_size + num_out_of_vocab_buckets + 3, embedding_size, lstm_size),
      input_spec=(spec, spec),
      loss_fn=metrics.masked_sequence_cross_entropy(loss_mask, pad),
      metric_fns={
          'num_tokens': metrics.num_tokens([pad]),
          'accuracy': metrics.masked_categorical_accuracy([pad]),
          'accuracy_without_out_of_vocab': metrics.masked_categorical_accuracy([pad, *oov]),
          'accuracy_without_out_of_vocab_or_end_of_sentence': (
              metrics.masked_categorical_accuracy([pad, eos, *oov])),
      },
  )


class TagLogisticRegression(nn.Module):
  """``bag_of_words[B, V] -> logits[B, num_tags]``; ``sigmoid(logits)`` is TFF's output."""

  num_tags: int = 500

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.num_tags, kernel_init=_GLOROT)(x)


def stackoverflow_tag_lr(word_vocab_size: int = 10_000, tag_vocab_size: int = 500) -> Model:
  """TFF's StackOverflow tag model: ``x`` float32 ``[word_vocab_size]``, ``y`` float32
  ``[tag_vocab_size]`` multi-hot; summed binary cross-entropy, precision, recall@5."""
  spec = (jax.ShapeDtypeStruct((word_vocab_size,), jnp.float32),
          jax.ShapeDtypeStruct((tag_vocab_size,), jnp.float32))
  return from_linen(
      TagLogisticRegression(tag_vocab_size),
      input_spec=spec,
      loss_fn=metrics.sigmoid_binary_cross_entropy,
      metric_fns={'precision': metrics.precision(0.5), 'recall_at_5': metrics.recall_at_k(5)},
      loss_reduction='sum',
  )
