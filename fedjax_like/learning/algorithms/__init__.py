"""Federated learning algorithms, each a short composition of the four template parts.

==========================  ======================================================  ==============
builder                     algorithm                                               paper
==========================  ======================================================  ==============
build_weighted_fed_avg      FedAvg, any server optimizer (FedAvgM with momentum)    McMahan+17
build_unweighted_fed_avg    FedAvg with uniform client weights                      McMahan+17
build_fed_sgd               FedSGD: a server step on the mean full-batch gradient   McMahan+17
build_weighted_fed_prox     FedProx (proximal term mu), also unweighted             Li+20
build_fed_adam / _yogi /    FedOpt: adaptive server optimizers                      Reddi+21
_adagrad / build_fed_opt
build_scaffold              SCAFFOLD, option II control variates, stateful clients  Karimireddy+20
build_weighted_mime_lite    MimeLite: frozen server optimizer state at clients      Karimireddy+21
build_fed_eval              federated evaluation of given weights                   (TFF)
build_personalization_eval  before/after k steps of local fine-tuning               (TFF)
==========================  ======================================================  ==============

Every training builder takes ``client_weighting`` (``ClientWeighting.NUM_EXAMPLES``, ``UNIFORM`` or
a function), ``model_distributor``/``model_aggregator`` replacements, and learning-rate schedules by
round where the algorithm has the rate (``client_learning_rate_fn``, ``server_learning_rate_fn``).
"""

from fedjax_like.learning.algorithms.fed_avg import (
    build_fed_avg,
    build_unweighted_fed_avg,
    build_weighted_fed_avg,
)
from fedjax_like.learning.algorithms.fed_eval import build_eval_client_work, build_fed_eval
from fedjax_like.learning.algorithms.fed_opt import (
    build_fed_adagrad,
    build_fed_adam,
    build_fed_opt,
    build_fed_yogi,
    build_fedopt_server_optimizer,
)
from fedjax_like.learning.algorithms.fed_prox import (
    build_unweighted_fed_prox,
    build_weighted_fed_prox,
)
from fedjax_like.learning.algorithms.fed_sgd import build_fed_sgd, build_gradient_client_work
from fedjax_like.learning.algorithms.mime_lite import (
    build_mime_lite_client_work,
    build_unweighted_mime_lite,
    build_weighted_mime_lite,
)
from fedjax_like.learning.algorithms.personalization_eval import (
    PersonalizationEval,
    build_personalization_eval,
)
from fedjax_like.learning.algorithms.scaffold import build_scaffold, build_scaffold_client_work
from fedjax_like.learning.client_weighting import ClientWeighting

__all__ = [
    'ClientWeighting',
    'PersonalizationEval',
    'build_eval_client_work',
    'build_fed_adagrad',
    'build_fed_adam',
    'build_fed_avg',
    'build_fed_eval',
    'build_fed_opt',
    'build_fed_sgd',
    'build_fed_yogi',
    'build_fedopt_server_optimizer',
    'build_gradient_client_work',
    'build_mime_lite_client_work',
    'build_personalization_eval',
    'build_scaffold',
    'build_scaffold_client_work',
    'build_unweighted_fed_avg',
    'build_unweighted_fed_prox',
    'build_unweighted_mime_lite',
    'build_weighted_fed_avg',
    'build_weighted_fed_prox',
    'build_weighted_mime_lite',
]
