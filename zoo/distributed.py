"""Training with data and expert parallelism through Lightning: :class:`ExpertParallelStrategy` is a DDP strategy
whose MoE layers hold ``E / ep`` experts per rank (:class:`~zoo.moe.parallel.ExpertParallelFFN`) on a
``("dp", "ep")`` device mesh, while everything else is replicated and averaged by DDP as usual.

Order of construction: a layer can only be sharded once the process group exists, but ``zoo train`` builds the
module before Lightning starts the ranks. So every module is built with the full :class:`~zoo.moe.FFNExperts`
bank (:func:`without_expert_parallel` on the config; the same random stream, so the same weights), and the
strategy shards each MoE layer's bank with ``ExpertParallelFFN.from_full`` in its ``setup``, after the process
group and the mesh exist and before DDP wraps the module and the optimizer is built. A checkpoint restored by
Lightning therefore always meets a full bank, and the sharded bank saves a full one (its state-dict hooks), so a
run moves between any ``ep`` and one process.

Starting the ranks: :class:`ZooDDPStrategy` (plain DDP; the base of the expert-parallel one) starts them with
``spawn``: the parent process keeps its full module and gets the trained weights back, and the ``zoo train`` command
is not run again per rank (Lightning's ``popen`` launcher would re-run the whole command, each rank making its own
run directory). Ranks started outside the zoo (torchrun, ``srun`` with several tasks, LSF: a Lightning cluster
environment that creates the processes) each run the whole command as their rank and are not spawned again; the
process group is joined before the run directory is made, so that rank 0 makes it and sends its path to the others
(:func:`rank_zero_value`), and only rank 0 writes into it (:func:`is_rank_zero`).

Gradients: the expert shards differ between ``ep`` ranks, so DDP must not average them; they are left out of its
all-reduce and, once the backward of an optimizer step is done, summed over the ``dp`` group (the ranks holding the
same shard) and divided by the world size, which is DDP's average over the world of the same gradient. Optimizer
state of the shards is gathered into full tensors in checkpoints and sliced again on load, like the weights.
"""

from __future__ import annotations

import atexit
import csv
import dataclasses
import datetime
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import ClusterEnvironment, LSFEnvironment, SLURMEnvironment, \
    TorchElasticEnvironment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch import nn
from torch.multiprocessing import ProcessRaisedException
from torch.nn.parallel import DistributedDataParallel

from zoo.errors import ZooValueError, check_arg
from zoo.moe import FFNExperts, MoEConfig, MoELayer
from zoo.moe.parallel import ExpertParallelFFN, expert_parallel_mesh, release_meshes

#: ``trainer.strategy`` names that :func:`trainer_strategy` turns into a :class:`ZooDDPStrategy` or an
#: :class:`ExpertParallelStrategy`, with the DDP options each name stands for.
DDP_NAMES = {"auto": {}, "ddp": {}, "ddp_spawn": {}, "ddp_find_unused_parameters_true": {"find_unused_parameters": True},
             "ddp_find_unused_parameters_false": {"find_unused_parameters": False}}

#: Launchers that start every rank themselves, in Lightning's order of detection (torchrun first: it runs under SLURM).
EXTERNAL_ENVIRONMENTS = (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment)


def external_environment() -> ClusterEnvironment | None:
    """The cluster environment of a world of more than one rank started outside the zoo (torchrun, ``srun``, LSF),
    whose ranks each run the whole command; None when the zoo runs alone or starts the ranks itself."""
    for env_type in EXTERNAL_ENVIRONMENTS:
        with warnings.catch_warnings():  # SLURM's detection warns about srun usage; Lightning warns again later
            warnings.simplefilter("ignore")
            detected = env_type.detect()
        if detected:
            env = env_type()
            return env if env.world_size() > 1 else None
    return None


def is_rank_zero() -> bool:
    """False in every rank but 0 of a world started outside the zoo: those ranks write nothing into the run dir."""
    env = external_environment()
    return env is None or env.global_rank() == 0


def join_external_world(timeout: datetime.timedelta = datetime.timedelta(minutes=30)) -> bool:
    """Initialise the default process group of a world started outside the zoo (Lightning's strategies then use
    it as it is); True when this process is such a rank (also when the group already exists).

    Args:
        timeout: of the group's collectives.
    """
    env = external_environment()
    if env is None:
        return False
    if not dist.is_initialized():
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = env.main_address, str(env.main_port)
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size(), timeout=timeout)
        atexit.register(_destroy_world)  # kept for the process's life: torchrun's store cannot host a second group
    return True


def _destroy_world() -> None:
    if dist.is_initialized():
        release_meshes()
        dist.destroy_process_group()


def rank_zero_value(make: Callable[[], Any]) -> Any:
    """``make()`` run on rank 0 only and its value (picklable) sent to every rank, in a world started outside the
    zoo; ``make()`` itself otherwise. A :class:`ZooValueError` on rank 0 is raised on every rank.

    Args:
        make: e.g. the function that creates the run directory.
    """
    if not join_external_world():
        return make()
    message: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            message = [("value", make())]
        except ZooValueError as err:
            message = [("error", str(err))]
    dist.broadcast_object_list(message, src=0, device=torch.device("cpu"))
    kind, value = message[0]
    if kind == "error":
        raise ZooValueError(value)
    return value


def wait_for_external_world() -> None:
    """Wait for every rank of a world started outside the zoo (nothing otherwise): a rank that is done must not exit
    while another still talks to it (gloo aborts a process whose peer is gone). The group itself lives on, for the
    next run of the same process, and is destroyed at exit."""
    if external_environment() is not None and dist.is_initialized():
        dist.barrier()


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


class ZooDDPStrategy(DDPStrategy):
    """DDP whose ranks the zoo starts itself (``spawn``), or, when a cluster environment creates them (torchrun,
    ``srun``), runs in the current process as its rank.

    Args:
        start_method: ``"spawn"`` (default), ``"fork"``, ``"forkserver"`` or ``"popen"`` (Lightning's re-launch
            of the script; only for scripts that are safe to run once per rank).
        process_group_backend: ``"gloo"`` or ``"nccl"`` (needs CUDA devices); default by device.
        timeout: of the process group's collectives.
        **kwargs: passed to :class:`~lightning.pytorch.strategies.DDPStrategy` (and on to DDP).
    """

    strategy_name = "zoo_ddp"

    def __init__(self, start_method: str = "spawn", process_group_backend: str | None = None,
                 timeout: datetime.timedelta | None = None, **kwargs: Any) -> None:
        check_arg(process_group_backend in (None, "gloo", "nccl"), "process_group_backend", process_group_backend,
                  [None, "gloo", "nccl"])
        if process_group_backend == "nccl" and not torch.cuda.is_available():
            raise ZooValueError("process group backend 'nccl' needs CUDA, which this machine does not have; "
                                "use 'gloo' (or trainer.accelerator=cpu)")
        extra = {"timeout": timeout} if timeout is not None else {}
        super().__init__(start_method=start_method, process_group_backend=process_group_backend, **extra, **kwargs)

    def _configure_launcher(self) -> None:
        if self._process_group_backend == "nccl" and any(d.type != "cuda" for d in self.parallel_devices or []):
            raise ZooValueError("process group backend 'nccl' needs CUDA devices; the trainer runs on "
                                f"{self.parallel_devices[0].type} (use 'gloo' or trainer.accelerator=gpu)")
        if self.cluster_environment is not None and self.cluster_environment.creates_processes_externally:
            self._launcher = None  # this process is already one of the ranks
        elif self._start_method == "popen":
            super()._configure_launcher()
        else:
            self._launcher = _Launcher(self, start_method=self._start_method)


class ExpertParallelStrategy(ZooDDPStrategy):
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
        super().__init__(start_method, process_group_backend, timeout, **kwargs)
        self.expert_parallel = expert_parallel
        self.mesh = None
        self._expert_params: list[nn.Parameter] = []

    def _configure_launcher(self) -> None:
        world = self.num_nodes * len(self.parallel_devices or [])
        if world % self.expert_parallel:
            raise ZooValueError(f"moe.expert_parallel={self.expert_parallel} does not divide the world size {world} "
                                f"(trainer.devices × trainer.num_nodes = {len(self.parallel_devices or [])} × "
                                f"{self.num_nodes})")
        super()._configure_launcher()

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
        self.precision_plugin.clip_grad_by_norm = self.clip_grad_by_global_norm  # trainer.gradient_clip_val
        super().setup(trainer)

    @torch.no_grad()
    def clip_grad_by_global_norm(self, optimizer: torch.optim.Optimizer, clip_val: float) -> None:
        """``torch.nn.utils.clip_grad_norm_`` with the norm of the whole model's gradient: the expert shards'
        squares summed over the ``ep`` group (each rank holds other experts), the replicated parameters' once.

        Args:
            optimizer: its parameters' gradients are scaled in place.
            clip_val: the largest norm kept.
        """
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        shard_ids = {id(p.grad) for p in self._expert_params if p.grad is not None}
        squares = torch.zeros(2, dtype=torch.float64, device=self.root_device)  # [shards, replicated]
        for g in grads:
            squares[0 if id(g) in shard_ids else 1] += g.detach().double().pow(2).sum()
        dist.all_reduce(squares[:1], group=self.mesh.get_group("ep"))
        scale = float(clip_val) / (float(squares.sum().sqrt()) + 1e-6)
        if scale < 1.0:
            torch._foreach_mul_(grads, scale)

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


def local_ranks(devices: Any, accelerator: str | None = None) -> int:
    """Ranks a Trainer starts on one node for ``trainer.devices`` (a count, a list of ids, ``"0,1"``, ``-1`` or
    ``"auto"``: every visible GPU for a GPU accelerator, one process on CPUs).

    Args:
        devices: ``trainer.devices``.
        accelerator: ``trainer.accelerator``.
    """
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1):
        gpu = accelerator in ("auto", "gpu", "cuda", None) and torch.cuda.is_available()
        return torch.cuda.device_count() if gpu else 1
    return devices if isinstance(devices, int) else 1


def trainer_strategy(strategy: Any, expert_parallel: int, accelerator: str | None = None, ranks: int = 1) -> Any:
    """The ``strategy`` a ``zoo train`` Trainer gets: an :class:`ExpertParallelStrategy` in place of a DDP name for
    ``moe.expert_parallel`` > 1; a :class:`ZooDDPStrategy` in place of a DDP name for a world of more than one rank
    (so the ranks never re-run the command); else ``strategy`` unchanged (a strategy object is kept as it is).

    Args:
        strategy: ``trainer.strategy`` (a name or a strategy object).
        expert_parallel: the config's ``moe.expert_parallel``.
        accelerator: ``trainer.accelerator``; ``"cpu"`` selects gloo.
        ranks: the world size, ``trainer.devices`` × ``trainer.num_nodes`` (:func:`local_ranks`).
    """
    if not isinstance(strategy, str) or (expert_parallel == 1 and ranks == 1):
        return strategy
    if strategy not in DDP_NAMES:
        if expert_parallel == 1:
            return strategy
        raise ZooValueError(f"moe.expert_parallel={expert_parallel} trains with DDP; trainer.strategy={strategy!r} "
                            f"is not supported (expected one of {', '.join(DDP_NAMES)})")
    backend = "gloo" if accelerator == "cpu" else None
    if expert_parallel == 1:
        return ZooDDPStrategy(process_group_backend=backend, **DDP_NAMES[strategy])
    return ExpertParallelStrategy(expert_parallel, process_group_backend=backend, **DDP_NAMES[strategy])
