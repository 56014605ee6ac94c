from .adversary import ClassifierAdversary, MixtureDensityNetwork, classifier_nll, mdn_nll
from .tails import SoftmaxTemperatureTail

__all__ = ["SoftmaxTemperatureTail", "MixtureDensityNetwork", "ClassifierAdversary", "mdn_nll", "classifier_nll"]
