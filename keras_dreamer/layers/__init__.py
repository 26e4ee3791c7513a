"""Keras layers of the world model, each usable on its own."""

from keras_dreamer.layers.actor import Actor
from keras_dreamer.layers.block_linear import BlockLinear
from keras_dreamer.layers.common import PoolConv2D
from keras_dreamer.layers.common import SameConv2D
from keras_dreamer.layers.common import UpsampleConv2D
from keras_dreamer.layers.critic import Critic
from keras_dreamer.layers.decoder import Decoder
from keras_dreamer.layers.dense import DenseNormAct
from keras_dreamer.layers.encoder import Encoder
from keras_dreamer.layers.heads import ContinueHead
from keras_dreamer.layers.heads import MLPHead
from keras_dreamer.layers.heads import RewardHead
from keras_dreamer.layers.norm import RMSNorm
from keras_dreamer.layers.normalizer import ReturnNormalizer
from keras_dreamer.layers.rssm import RSSM

__all__ = [
    "Actor",
    "BlockLinear",
    "ContinueHead",
    "Critic",
    "Decoder",
    "DenseNormAct",
    "Encoder",
    "MLPHead",
    "PoolConv2D",
    "RMSNorm",
    "ReturnNormalizer",
    "RewardHead",
    "RSSM",
    "SameConv2D",
    "UpsampleConv2D",
]
