from .tails import SoftmaxTemperatureTail

__all__ = ["SoftmaxTemperatureTail"]
