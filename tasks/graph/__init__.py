"""Graph prompts (GMoPE, Wang et al., arXiv 2511.03251): several GNN experts, each with a prompt added to the node
features, mixed by a structure-aware router, pretrained on many graph domains and transferred by tuning the prompts
only; against single-prompt baselines (GPF, GPF-plus, GraphPrompt, All-in-One), fine-tuning, linear probes and a
GNN trained from scratch.

Data: seeded synthetic domains (:mod:`.synthetic`), the graphs that packages ship (:mod:`.real`), readers for a
user's edge list, Planetoid raw and TU files (:mod:`.formats`), few-shot splits (:mod:`.splits`). Models: GNN
encoders and GMoPE on ``zoo.moe``'s router (:mod:`.models`), the prompt baselines (:mod:`.prompts`), the pretext
losses (:mod:`.pretext`); pretraining (:mod:`.module`), adaptation (:mod:`.transfer`) and the downstream
evaluations (:mod:`.evaluation`). Registered as the ``graph`` task through the ``zoo.tasks`` entry point; builders
import torch and torch-geometric only when called.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import GraphConfig

TASK = TaskSpec(
    name="graph",
    description="graph prompt learning with a mixture of prompt experts (GMoPE) on PyTorch Geometric: pretraining on "
    "synthetic domains, few-shot transfer (leave-one-domain-out nodes, karate club, graph atlas, links) against "
    "fine-tuning, linear probes and the GPF, GPF-plus, GraphPrompt and All-in-One prompts",
    config_cls=GraphConfig,
    build_datamodule=lazy("zoo.tasks.graph.data:build_datamodule"),
    build_module=lazy("zoo.tasks.graph.module:build_module"),
    model_info=lazy("zoo.tasks.graph.data:model_info"),
    needs_fit=lazy("zoo.tasks.graph.module:needs_fit"),
    evaluate=lazy("zoo.tasks.graph.evaluation:evaluate"),
    predict=lazy("zoo.tasks.graph.predict:predict"),
    predict_input="EDGES.csv of your graph (source,target per line), or a TU dataset folder for graph "
    "classification",
    predict_options=(
        PredictOption("nodes", "node CSV with a header, columns node[,label][,features...] (a blank label: "
                      "unknown); the labelled nodes are the shots the prompts are tuned on", metavar="CSV"),
        PredictOption("align", "project features of another width onto the weights' width by SVD",
                      flag_only=True),
        PredictOption("steps", "tuning steps on the labelled examples (default: the recipe's)", type=int,
                      metavar="N"),
        PredictOption("plot", "draw the graph coloured by predicted label into this PNG", metavar="PNG"),
    ),
    extras=("graph",),
    requires=("torch_geometric", "networkx"),
    headline_metrics=("test/lodo_acc", "test/lodo_f1", "test/karate_acc", "test/atlas_acc", "test/atlas_f1",
                      "test/link_auc", "test/tunable_params", "test/entropy", "test/max_cos"),
)
