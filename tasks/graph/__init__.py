"""Graph prompts (GMoPE, Wang et al., arXiv 2511.03251): several GNN experts, each with a prompt added to the node
features, mixed by a structure-aware router, pretrained on many graph domains and transferred by tuning the prompts
only; against single-prompt baselines (GPF, GPF-plus, GraphPrompt, All-in-One), fine-tuning and linear probes.

So far the data and model parts exist, not registered as a task yet: seeded synthetic domains (:mod:`.synthetic`),
the graphs that packages ship (:mod:`.real`), readers for a user's edge list, Planetoid raw and TU files
(:mod:`.formats`), few-shot splits (:mod:`.splits`), GNN encoders and GMoPE on ``zoo.moe``'s router
(:mod:`.models`), the prompt baselines (:mod:`.prompts`) and the pretext losses (:mod:`.pretext`).
"""
