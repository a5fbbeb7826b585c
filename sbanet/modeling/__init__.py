"""SBANet's parts, one module per box of the paper's Fig. 2-4; ``plain_bert``, ``plain_tokenizer``
and ``plain_efficientnet`` build the same encoders without transformers or timm (inference)."""

from .bam import BidirectionalAlignmentModule, LearnableQueryTokens, QueryTextAlignment
from .decoder import SimpleDecoder
from .dfs import DynamicFeatureSelection
from .pwam import PWAM, LanguageGate, PixelWordAttention
from .sbanet import SBANet
from .tcsa import TextConditionedAggregator
from .text_encoder import TextEncoder
from .visual_encoder import EfficientNetLiteEncoder, SwinEncoder

__all__ = [
    "PWAM",
    "BidirectionalAlignmentModule",
    "DynamicFeatureSelection",
    "EfficientNetLiteEncoder",
    "LanguageGate",
    "LearnableQueryTokens",
    "PixelWordAttention",
    "QueryTextAlignment",
    "SBANet",
    "SimpleDecoder",
    "SwinEncoder",
    "TextConditionedAggregator",
    "TextEncoder",
]
