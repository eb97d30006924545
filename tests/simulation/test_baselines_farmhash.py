"""FarmHash Fingerprint64 in Python (simulation/baselines/stackoverflow/farmhash.py) against
reference values, one key per length branch of the algorithm (0-16, 17-32, 33-64, over 64 bytes)."""

import pytest

from fedjax_like.simulation.baselines.stackoverflow import farmhash

# Computed with Google's C++ FarmHash through pyfarmhash 0.5.1 (farmhash.fingerprint64), which is
# the function TensorFlow's Fingerprint64 and to_hash_bucket_fast call.
REFERENCE = {
    b'': 11160318154034397263,
    b'a': 12917804110809363939,
    b'the': 7003889267569045354,
    b'Hello': 15404698994557526151,
    b'stackoverflow': 13421050778374413898,
    b'xyzzy-unknown-word': 374684119559531912,
    b'x' * 40: 17003596230054984852,
    b'y' * 100: 17121492607157028355,
    'caf\u00e9'.encode(): 11379377682866355587,
}


@pytest.mark.parametrize('key', list(REFERENCE))
def test_fingerprint64_matches_farmhash(key):
  assert farmhash.fingerprint64(key) == REFERENCE[key]


def test_to_hash_bucket_fast_example_from_tensorflow_docs():
  # tf.strings.to_hash_bucket_fast(['Hello', 'TensorFlow', '2.x'], 3) == [0, 2, 2].
  assert [farmhash.to_hash_bucket_fast(k, 3) for k in ('Hello', 'TensorFlow', '2.x')] == [0, 2, 2]
  assert farmhash.fingerprint64('caf\u00e9') == farmhash.fingerprint64('caf\u00e9'.encode())
