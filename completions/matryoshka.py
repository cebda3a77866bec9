"""Shorten embeddings of models trained to keep their meaning in their first dimensions.

Matryoshka representation learning (Kusupati et al., 2022) orders a vector's information
so that its first dimensions are an embedding on their own; EmbeddingGemma's model card
names 768, 512, 256 and 128. OpenAI's `dimensions` gives such a prefix, scaled back to
unit length so that dot products stay cosine similarities.
"""

import math


def shorten(vector, dimensions):
    """Return the first `dimensions` values of the vector, scaled to unit length."""
    prefix = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in prefix))
    return [x / norm for x in prefix] if norm else prefix
