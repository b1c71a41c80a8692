"""Audio generation (UniMoE-Audio, Liu et al. 2025): one decoder over codec tokens for speech and music whose FFNs
are ``zoo.moe`` layers with top-P routing, a null expert and shared experts, trained with a three-stage curriculum.

Not registered as a task yet; its parts so far: offline speech (:mod:`.speech`) and music (:mod:`.music`)
synthesis, the cached corpus (:mod:`.corpus`), readers for a user's audio (:mod:`.formats`), the local tokenizer
(:mod:`.codec`), the local proxy metrics and their probe networks (:mod:`.metrics`, :mod:`.probes`), and the token
decoder with a key/value cache whose FFNs are dense or ``zoo.moe`` layers (:mod:`.models`).
"""
