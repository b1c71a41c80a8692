"""Training with data and expert parallelism through Lightning: :class:`ExpertParallelStrategy` is a DDP strategy
whose MoE layers hold ``E / ep`` experts per rank (:class:`~zoo.moe.parallel.ExpertParallelFFN`) on a
``("dp", "ep")`` device mesh, while everything else is replicated and averaged by DDP as usual.

Order of construction: a layer can only be sharded once the process group exists, but ``zoo train`` builds the
module before Lightning starts the ranks. So every module is built with the full :class:`~zoo.moe.FFNExperts`
bank (:func:`without_expert_parallel` on the config; the same random stream, so the same weights), and the
strategy shards each MoE layer's bank with ``ExpertParallelFFN.from_full`` in its ``setup``, after the process
group and the mesh exist and before DDP wraps the module and the optimizer is built. A checkpoint restored by
Lightning therefore always meets a full bank, and the sharded bank saves a full one (its state-dict hooks), so a
run moves between any ``ep`` and one process. The ranks are started with ``spawn`` by default: the parent process
keeps its full module and gets the trained weights back, and the ``zoo train`` command is not run again per rank
(Lightning's ``popen`` launcher would re-run the whole command, each rank making its own run directory).

Gradients: the expert shards differ between ``ep`` ranks, so DDP must not average them; they are left out of its
all-reduce and, once the backward of an optimizer step is done, summed over the ``dp`` group (the ranks holding the
same shard) and divided by the world size, which is DDP's average over the world of the same gradient. Optimizer
state of the shards is gathered into full tensors in checkpoints and sliced again on load, like the weights.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch import nn
from torch.multiprocessing import ProcessRaisedException
from torch.nn.parallel import DistributedDataParallel

from zoo.errors import ZooValueError, check_arg
from zoo.moe import FFNExperts, MoEConfig, MoELayer
from zoo.moe.parallel import ExpertParallelFFN, expert_parallel_mesh, release_meshes

#: ``trainer.strategy`` values that :func:`expert_parallel_strategy` turns into an :class:`ExpertParallelStrategy`.
DDP_NAMES = ("auto", "ddp", "ddp_spawn")


def _moe_configs(obj: Any) -> list[MoEConfig]:
    if isinstance(obj, MoEConfig):
        return [obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [c for f in dataclasses.fields(obj) for c in _moe_configs(getattr(obj, f.name))]
    return []


def expert_parallel_of(cfg: Any) -> int:
    """The ``expert_parallel`` of the MoE configs in a task config (1 when it has none).

    Args:
        cfg: a task config dataclass; its :class:`MoEConfig` fields are found at any depth.
    """
    values = sorted({c.expert_parallel for c in _moe_configs(cfg)})
    if len(values) > 1:
        raise ZooValueError(f"moe.expert_parallel differs between the MoE blocks of the config ({values}); "
                            "expected one value for the whole model")
    return values[0] if values else 1


def without_expert_parallel(cfg: Any) -> Any:
    """A copy of a task config with ``expert_parallel=1`` in every MoE config (the full bank is built; the
    strategy shards it); the config itself when nothing changes.

    Args:
        cfg: a task config dataclass.
    """
    if isinstance(cfg, MoEConfig):
        return cfg if cfg.expert_parallel == 1 else dataclasses.replace(cfg, expert_parallel=1)
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return cfg
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        new = without_expert_parallel(value)
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(cfg, **changes) if changes else cfg


def shard_experts(module: nn.Module, group: dist.ProcessGroup) -> list[str]:
    """Replace the :class:`FFNExperts` bank of every :class:`MoELayer` in ``module`` by this rank's
    :class:`ExpertParallelFFN` shard (weights copied); returns the qualified names of the shards' parameters.

    Args:
        module: the module to change in place.
        group: the expert-parallel process group (the mesh's ``"ep"`` group).
    """
    for layer in [m for m in module.modules() if isinstance(m, MoELayer)]:
        if type(layer.experts) is FFNExperts:
            full = layer.experts
            layer.experts = ExpertParallelFFN.from_full(full, group).to(full.w1.device)
    return expert_parameter_names(module)


def expert_parameter_names(module: nn.Module) -> list[str]:
    """Qualified names of the parameters of the :class:`ExpertParallelFFN` banks in ``module``."""
    return [f"{name}.{p}" if name else p for name, m in module.named_modules() if isinstance(m, ExpertParallelFFN)
            for p, _ in m.named_parameters(recurse=False)]


def check_expert_counts(module: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Refuse, in one line, a state dict whose expert banks hold another number of experts than ``module``'s.

    Args:
        module: the module about to load ``state_dict`` (full banks or shards).
        state_dict: e.g. a Lightning checkpoint's ``state_dict``.
    """
    for name, m in module.named_modules():
        if isinstance(m, (FFNExperts, ExpertParallelFFN)):
            key = f"{name}.w1" if name else "w1"
            value = state_dict.get(key)
            if value is not None and value.shape[0] != m.num_experts:
                raise ZooValueError(f"checkpoint tensor '{key}' holds {value.shape[0]} experts; this model has "
                                    f"moe.num_experts={m.num_experts}")


def _keep_csv_rows(logger: Any) -> None:
    """Each launch unpickles the loggers afresh, and a new CSV writer deletes the ``metrics.csv`` it finds (the fit's
    rows, at test time): the writer is made here, in the parent, and told the file's columns, so the ranks (and the
    parent) append to it."""
    writer = logger.experiment if isinstance(logger, CSVLogger) else None
    path = getattr(writer, "metrics_file_path", None)
    if path is not None and os.path.isfile(path):
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))


class _Launcher(_MultiProcessingLauncher):
    """Lightning's multiprocessing launcher; a :class:`ZooValueError` raised in a rank is raised again in the
    parent as the same one-line error instead of the rank's traceback."""

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        loggers = trainer.loggers if trainer is not None else []
        for logger in loggers:
            _keep_csv_rows(logger)
        try:
            result = super().launch(function, *args, trainer=trainer, **kwargs)
            for logger in loggers:  # the parent may log too (a task's own evaluation)
                _keep_csv_rows(logger)
            return result
        except ProcessRaisedException as err:
            tail = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            marker = "ZooValueError: "
            if marker in tail:
                raise ZooValueError(tail.split(marker, 1)[1]) from None
            raise


    def _wrapping_function(self, *args: Any, **kwargs: Any) -> None:
        """A rank's whole life; it leaves the process group together with the others once its results are sent,
        because gloo aborts a process whose peer exits while the group is alive."""
        super()._wrapping_function(*args, **kwargs)
        if dist.is_available() and dist.is_initialized():  # a failed rank skips this: the launcher stops them all
            dist.barrier()
            release_meshes()
            dist.destroy_process_group()
        # The rank's results are in the parent's queue. Leave now: gloo objects still referenced (by DDP's reducer)
        # can abort the process in their destructors at interpreter exit, which the parent would see as a crash.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class ExpertParallelStrategy(DDPStrategy):
    """DDP with expert parallelism: shards the MoE banks over the mesh's ``ep`` dim in ``setup``, keeps them out
    of DDP's all-reduce and averages their gradients over the ``dp`` dim itself.

    Args:
        expert_parallel: ranks that share one bank of experts; must divide the world size (devices × nodes).
        start_method: ``"spawn"`` (default), ``"fork"``, ``"forkserver"`` or ``"popen"`` (Lightning's re-launch
            of the script; only for scripts that are safe to run once per rank).
        process_group_backend: ``"gloo"`` or ``"nccl"`` (needs CUDA devices); default by device.
        timeout: of the process group's collectives.
        **kwargs: passed to :class:`~lightning.pytorch.strategies.DDPStrategy` (and on to DDP).
    """

    strategy_name = "ddp_expert_parallel"

    def __init__(self, expert_parallel: int, start_method: str = "spawn", process_group_backend: str | None = None,
                 timeout: datetime.timedelta | None = None, **kwargs: Any) -> None:
        check_arg(isinstance(expert_parallel, int) and not isinstance(expert_parallel, bool) and expert_parallel >= 1,
                  "moe.expert_parallel", expert_parallel, "a positive int")
        check_arg(process_group_backend in (None, "gloo", "nccl"), "process_group_backend", process_group_backend,
                  [None, "gloo", "nccl"])
        if process_group_backend == "nccl" and not torch.cuda.is_available():
            raise ZooValueError("process group backend 'nccl' needs CUDA, which this machine does not have; "
                                "use 'gloo' (or trainer.accelerator=cpu)")
        extra = {"timeout": timeout} if timeout is not None else {}
        super().__init__(start_method=start_method, process_group_backend=process_group_backend, **extra, **kwargs)
        self.expert_parallel = expert_parallel
        self.mesh = None
        self._expert_params: list[nn.Parameter] = []

    def _configure_launcher(self) -> None:
        world = self.num_nodes * len(self.parallel_devices or [])
        if world % self.expert_parallel:
            raise ZooValueError(f"moe.expert_parallel={self.expert_parallel} does not divide the world size {world} "
                                f"(trainer.devices × trainer.num_nodes = {len(self.parallel_devices or [])} × "
                                f"{self.num_nodes})")
        if self._process_group_backend == "nccl" and any(d.type != "cuda" for d in self.parallel_devices or []):
            raise ZooValueError("process group backend 'nccl' needs CUDA devices; the trainer runs on "
                                f"{self.parallel_devices[0].type} (use 'gloo' or trainer.accelerator=gpu)")
        if self._start_method == "popen":
            super()._configure_launcher()
        else:
            self._launcher = _Launcher(self, start_method=self._start_method)

    def setup(self, trainer: Any) -> None:
        module = self.lightning_module
        self.mesh = expert_parallel_mesh(self.expert_parallel, self.root_device.type)
        names = shard_experts(module, self.mesh.get_group("ep"))
        if not names:
            raise ZooValueError(f"moe.expert_parallel={self.expert_parallel}: the model has no MoE layer with an "
                                "FFN expert bank to shard")
        params = dict(module.named_parameters())
        self._expert_params = [params[n] for n in names]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)
        super().setup(trainer)

    @torch.no_grad()
    def reduce_expert_gradients(self) -> None:
        """Sum the expert shards' gradients over the ``dp`` group (in one flat buffer) and divide by the world
        size: the average over all ranks that DDP gives the replicated parameters."""
        if not self._expert_params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._expert_params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        if self.mesh.size(0) > 1:
            dist.all_reduce(flat, group=self.mesh.get_group("dp"))
        flat /= self.world_size
        for p, g in zip(self._expert_params, flat.split([g.numel() for g in grads])):
            p.grad = g.view_as(p)

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any], model: Any = None, **kwargs: Any) -> Any:
        def closure_and_reduce() -> Any:
            out = closure()
            self.reduce_expert_gradients()
            return out

        return super().optimizer_step(optimizer, closure_and_reduce, model, **kwargs)

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        check_expert_counts(self.lightning_module, checkpoint["state_dict"])
        super().load_model_state_dict(checkpoint, strict=strict)

    def _banks_by_index(self, optimizer: torch.optim.Optimizer) -> dict[int, ExpertParallelFFN]:
        """Optimizer state-dict index → the bank owning that parameter, for the expert shards."""
        owner = {id(p): m for m in self.lightning_module.modules() if isinstance(m, ExpertParallelFFN)
                 for p in m.parameters(recurse=False)}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return {i: owner[id(p)] for i, p in enumerate(params) if id(p) in owner}

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        optimizer = getattr(optimizer, "_optimizer", optimizer)
        state = optimizer.state_dict()
        for i, bank in self._banks_by_index(optimizer).items():
            for key, value in state["state"].get(i, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == bank.local_experts:
                    parts = [torch.empty_like(value) for _ in range(bank.ep)]
                    dist.all_gather(parts, value.contiguous(), group=bank.group)
                    state["state"][i] = {**state["state"][i], key: torch.cat(parts)}
        return state

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        for optimizer, opt_state in zip(self.optimizers, checkpoint["optimizer_states"]):
            for i, bank in self._banks_by_index(optimizer).items():
                entry = opt_state["state"].get(i, {})
                for key, value in entry.items():
                    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == bank.num_experts:
                        entry[key] = value[bank.first_expert:bank.first_expert + bank.local_experts]
        super().load_optimizer_state_dict(checkpoint)


def expert_parallel_strategy(strategy: Any, expert_parallel: int, accelerator: str | None = None) -> Any:
    """The ``strategy`` a Trainer gets for a model with ``moe.expert_parallel``: unchanged when it is 1 or
    already an :class:`ExpertParallelStrategy`, else an :class:`ExpertParallelStrategy` in place of a DDP name.

    Args:
        strategy: ``trainer.strategy`` (a name or a strategy object).
        expert_parallel: the config's ``moe.expert_parallel``.
        accelerator: ``trainer.accelerator``; ``"cpu"`` selects gloo.
    """
    if expert_parallel == 1 or isinstance(strategy, ExpertParallelStrategy):
        return strategy
    if strategy not in DDP_NAMES:
        raise ZooValueError(f"moe.expert_parallel={expert_parallel} trains with DDP; trainer.strategy={strategy!r} "
                            f"is not supported (expected one of {', '.join(DDP_NAMES)})")
    backend = "gloo" if accelerator == "cpu" else None
    return ExpertParallelStrategy(expert_parallel, process_group_backend=backend)
