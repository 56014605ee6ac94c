from .adversary import ClassifierAdversary, MixtureDensityNetwork, classifier_nll, mdn_nll
from .tails import SoftmaxTemperatureTail
from .tangents import ForwardTangents

__all__ = [
    "SoftmaxTemperatureTail",
    "ForwardTangents",
    "MixtureDensityNetwork",
    "ClassifierAdversary",
    "mdn_nll",
    "classifier_nll",
]
