"""Federated data, host side: ClientData, a client's Dataset, cohort packing, samplers, sources."""

from fedjax_like.data import partition, sampling, sources
from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.data.packing import PackedCohort, pack_cohort, validate_cohort
from fedjax_like.data.sources import cifar100, digits, emnist, shakespeare, stackoverflow, tfds

__all__ = [
    'BatchedDataset',
    'ClientData',
    'Dataset',
    'PackedCohort',
    'cifar100',
    'digits',
    'emnist',
    'pack_cohort',
    'partition',
    'sampling',
    'shakespeare',
    'sources',
    'stackoverflow',
    'tfds',
    'validate_cohort',
]
