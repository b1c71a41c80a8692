"""Audio generation (UniMoE-Audio, Liu et al. 2025): one decoder over codec tokens for speech and music whose FFNs
are ``zoo.moe`` layers with top-P routing, a null expert and shared experts, trained with a three-stage curriculum.

So far the data parts exist, not registered as a task yet.
"""
