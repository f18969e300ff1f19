"""Look inside a model: attention tables, heatmaps and the explorer page, next-token
probabilities through the sampler chain, the logit lens, and token embeddings in a plane.

    from lucidlm import load, look
    model, tok = load()
    view = look.attention(model, tok, "Your journey starts with one step", layers=[3])
    print(view.table(layer=3, head=5))
"""

from .attention import AttentionView, attention
from .embeddings import EmbeddingView, embeddings_2d, pca_2d
from .lens import LensView, logit_lens
from .next_token import NextTokenView, next_token

__all__ = ["AttentionView", "EmbeddingView", "LensView", "NextTokenView", "attention", "embeddings_2d", "logit_lens",
           "next_token", "pca_2d"]
