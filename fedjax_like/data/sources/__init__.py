"""File-backed federated datasets (TFF's published files, read without TensorFlow).

Each source module (:mod:`.emnist`, :mod:`.shakespeare`, :mod:`.cifar100`, :mod:`.stackoverflow`)
finds its files in a local cache, downloads them on first use when allowed, and builds a lazy
:class:`~fedjax_like.data.ClientData`. They share the readers: :mod:`.tf_example` (the
``tf.train.Example`` decoder), :mod:`.sql_client_data` (TFF's SQLite layout),
:mod:`.hdf5_client_data` (TFF's older HDF5 layout), :mod:`.handles` (one open handle per file) and :mod:`.download`
(resumable, verified, atomic downloads and the offline error).
:mod:`.tfds` turns any tensorflow-datasets dataset into clients through a partitioner (no
TensorFlow needed).
"""


class DatasetNotFoundError(FileNotFoundError):
  """A dataset's files are not in the cache and could not be downloaded.

  The message names the missing file, the full path to place it at and the URL to fetch it from.
  It subclasses ``FileNotFoundError`` (an ``OSError``), so ``except OSError`` also catches it.
  """


class CorruptDatasetError(DatasetNotFoundError):
  """A cached or downloaded dataset file is incomplete, damaged, or not the published release.

  The message names the file and what to do (usually: delete it and load again). A subclass of
  :class:`DatasetNotFoundError`: the usable data is, in effect, missing.
  """
