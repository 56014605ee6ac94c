
from .._compat import import_lumin

import_lumin()  # LUMIN first, with pdpbox's global warning filter undone (lumin_inferno._compat)
from .adversary import ClassifierAdversary, MixtureDensityNetwork, classifier_nll, mdn_nll
from .tails import ClassScoreTail, SoftmaxTemperatureTail, soft_class_score_bins
from .tangents import ForwardTangents

__all__ = [
    "SoftmaxTemperatureTail",
    "ClassScoreTail",
    "soft_class_score_bins",
    "ForwardTangents",
    "MixtureDensityNetwork",
    "ClassifierAdversary",
    "mdn_nll",
    "classifier_nll",
]
