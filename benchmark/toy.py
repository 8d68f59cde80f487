"""Toy models: a frozen spec, a built network, and its ground-truth mechanisms (docs/design.md, Core contracts).

A subclass of :class:`ToyModel` says how to build the network (``make_model``), how to set its weights
(``fit``: train deterministically from the seed on CPU, or set them by hand), how to sample inputs,
which mechanisms exist (``mechanisms``) and which of them an input uses (``active``). The base class
caches the weights on disk with a SHA-256 (:mod:`benchmark.cache`), checks the trained model's health
and retrains with the next seed when a mechanism was lost. A toy model whose training is not bit-reproducible
across CPUs, or too slow for a fresh clone's quick suite and tests, ships its weights instead
(:meth:`ToyModel.shipped_weights_path`): ``build`` loads them and trains only when asked to (``shipped=False``).

The decomposed parameters are ``spec.decomposed``; every other parameter (a bias, say) stays fixed at
its trained value and is not part of any component.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from benchmark.cache import WeightCache, read_shipped, weights_sha256
from benchmark.decomposition import flatten
from benchmark.registry import TOY_MODELS

GTStatus = Literal["exact", "strong", "contested"]
Locality = Literal["exact", "readout", "ratio", "perturb"]  # see ToyModel.locality
Track = Literal["reproduction", "headline", "diagnostic"]  # see ToyModel.track
MAX_TIER = 5  # tiers: 0 exact, 1 superposition, 2 extra structure, 3 higher rank, 4 contested, 5 transformers


@dataclass(frozen=True)
class ToyModelSpec:
    """What a toy model is, independent of its weights."""

    name: str
    tier: int  # 0 = exact by construction ... 4 = contested, 5 = transformers
    version: str
    seed: int
    gt_status: GTStatus
    description: str
    paper: str
    decomposed: tuple[str, ...]  # names of the parameters that methods decompose

    def __post_init__(self) -> None:
        if self.gt_status not in ("exact", "strong", "contested"):
            raise ValueError(f"gt_status must be exact, strong or contested, not {self.gt_status!r}")
        if not 0 <= self.tier <= MAX_TIER:
            raise ValueError(f"tier must be in 0..{MAX_TIER}, not {self.tier}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier": self.tier,
            "version": self.version,
            "seed": self.seed,
            "gt_status": self.gt_status,
            "description": self.description,
            "paper": self.paper,
            "decomposed": list(self.decomposed),
        }


@dataclass
class Mechanism:
    """One ground-truth mechanism, over some of the decomposed parameters.

    Either ``components`` (exact: a tensor of each parameter's shape; the exact components of all
    mechanisms sum to the decomposed parameters) or ``subspace`` (for rank > 1 or where only the span is
    defined: ``{param: Tensor[k, *param.shape]}``, the k vectors orthonormal when the parameters are
    concatenated). ``support`` is a bool mask per parameter; parameters it does not name are outside it.
    ``refinement``, where given, is a finer decomposition that is just as valid (exact pieces that sum to
    ``components``, e.g. a block MLP's block split per ReLU neuron, each piece cross-layer): a method that
    returns these pieces scores as if it had returned the mechanism (docs/metrics.md, "Refinements").
    """

    name: str
    support: dict[str, Tensor]
    components: dict[str, Tensor] | None = None
    subspace: dict[str, Tensor] | None = None
    always_on: bool = False
    refinement: list[dict[str, Tensor]] | None = None

    def __post_init__(self) -> None:
        if (self.components is None) == (self.subspace is None):
            raise ValueError(f"mechanism {self.name!r}: give exactly one of components or subspace")
        if self.refinement is not None and (self.components is None or len(self.refinement) < 2):
            raise ValueError(f"mechanism {self.name!r}: a refinement needs exact components and >= 2 pieces")

    @property
    def rank(self) -> int:
        if self.subspace is not None:
            return next(iter(self.subspace.values())).shape[0]
        return 1

    def basis(self, names: tuple[str, ...], shapes: dict[str, torch.Size]) -> Tensor:
        """Orthonormal basis of the mechanism in the flattened parameter space, ``[k, D]`` float64."""
        if self.components is not None:
            v = flatten({k: c.unsqueeze(0) for k, c in self.components.items()}, names, shapes, 1)
            return v / v.norm().clamp_min(1e-300)
        assert self.subspace is not None
        b = flatten(self.subspace, names, shapes, self.rank)
        q, _ = torch.linalg.qr(b.T)  # re-orthonormalise against rounding
        return q.T

    def removed_from(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """``params`` without this mechanism: its exact components subtracted or, for a span, the projection of
        the parameters it covers onto the span removed (in float64)."""
        out = dict(params)
        if self.components is not None:
            for k, c in self.components.items():
                out[k] = out[k] - c
            return out
        assert self.subspace is not None
        names = tuple(self.subspace)
        shapes = {k: params[k].shape for k in names}
        flat = flatten({k: params[k].unsqueeze(0) for k in names}, names, shapes, 1)[0]
        basis = self.basis(names, shapes)
        flat = flat - basis.T @ (basis @ flat)
        for k, piece in zip(names, flat.split([params[k].numel() for k in names]), strict=True):
            out[k] = piece.reshape(shapes[k]).to(params[k])
        return out

    def support_flat(self, names: tuple[str, ...], shapes: dict[str, torch.Size]) -> Tensor:
        parts = [self.support.get(n, torch.zeros(shapes[n], dtype=torch.bool)).reshape(-1).cpu() for n in names]
        return torch.cat(parts)


@dataclass
class GroundTruth:
    mechanisms: list[Mechanism]
    active: Callable[[Tensor], Tensor]  # inputs [batch, ...] -> bool [batch, M]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.mechanisms]


@dataclass
class LinearSite:
    """One use of a weight matrix in the forward pass: ``out = inputs @ W.T`` (or ``inputs @ W``).

    Activation-space methods (PCA, LIB) read a network's layers through these. A sequence model's weight
    reads one row per position: ``inputs`` is then ``[batch * k, d_in]``, the k rows of each input together
    (input-major); :func:`per_input` turns such per-row values into per-input ones.
    """

    param: str
    inputs: Tensor  # [batch * k, d_in] activations that the weight reads (k = 1 but for sequence models)
    transposed: bool = False  # True where the forward pass uses the parameter's transpose


def per_input(values: Tensor, batch: int) -> Tensor:
    """Per-row values ``[batch * k, ...]`` (k rows per input, input-major: a sequence model's positions) as
    per-input ones ``[batch, ...]``: the largest over each input's rows, so that a component counts as used
    on an input where it is used at any position."""
    if values.shape[0] == batch:
        return values
    if batch == 0 or values.shape[0] % batch:
        raise ValueError(f"{values.shape[0]} rows do not split into {batch} inputs")
    return values.reshape(batch, values.shape[0] // batch, *values.shape[1:]).amax(dim=1)


@dataclass
class Target:
    """What a method may see: the network, its sampler and loss, but not the ground truth.

    ``ground_truth`` is filled only for methods whose class sets ``sees_ground_truth = True`` (the
    labelled ``oracle`` baseline).
    """

    spec: ToyModelSpec
    model: nn.Module
    sample: Callable[[int, torch.Generator], Tensor]
    loss: Callable[[Tensor, Tensor], Tensor]  # (output, inputs) -> scalar, the training loss
    sites: Callable[[Tensor], list[LinearSite]]
    ground_truth: GroundTruth | None = None

    @property
    def decomposed(self) -> tuple[str, ...]:
        return self.spec.decomposed

    def params(self) -> dict[str, Tensor]:
        named = dict(self.model.named_parameters())
        return {n: named[n] for n in self.decomposed}

    def largest_side(self) -> int:
        """The largest side of any decomposed matrix: what a blind rule may scale a method's size with
        (docs/protocol.md, the blind rule)."""
        return max(max(p.shape) for p in self.params().values())


@dataclass
class BuildInfo:
    """How the weights came to be: recorded in every result."""

    weights_sha256: str
    train_seed: int  # the seed actually used (may be later than spec.seed after a health retry)
    build_seconds: float
    from_cache: bool
    extra: dict[str, Any] = field(default_factory=dict)


class ToyModel(ABC):
    """Base class for a toy network with known mechanisms.

    Subclasses set ``spec`` in ``__init__`` and implement the abstract methods. ``build()`` must be called
    (``load_toy`` does it) before ``model`` or ``ground_truth`` are used.
    """

    spec: ToyModelSpec
    max_health_retries: int = 10

    track: Track = "reproduction"
    """Which part of the ladder the toy belongs to (docs/toy_models.md, "Tracks"): ``"reproduction"``, the
    papers' toys at the papers' settings, where each adapter shows it is faithful to its paper;
    ``"headline"``, toys that pass the headroom gate (no fixed basis and no data-only method comes near
    the oracle), on which methods are ranked; ``"diagnostic"``, variants shown beside their reproduction
    toy (what a rotation changes) that did not pass the gate."""

    # -- facts about the ground truth, checked by tests/test_toy_models.py on every registered toy ---------
    # The defaults are the strictest claims; a toy overrides the ones that do not hold for it.
    locality: Locality = "exact"
    """How removing a mechanism (subtracting its component, or projecting out its span) may move the output
    on inputs that do not use it. ``"exact"``: not at all (float32 rounding, 1e-4 of the output scale).
    ``"readout"``: the tied read-out of TMS, where mechanism m also holds output m's read of the hidden state:
    only output m moves, by at most the model's own error there (its label is 0) plus the value output m
    falls to without the mechanism. ``"ratio"``: no exact locality (cross-layer pieces, the 2-3 layer resid
    MLPs): the mean change on the inputs that use it must be ``locality_ratio`` times the mean change on the
    others. ``"perturb"``: support-level spans with no exact split: moving the weights by 2% of their norm
    along each span direction must move the outputs of its inputs ``locality_ratio`` times more (mean) than
    the others' (L3D's intervention test, arXiv:2504.00194 section 3)."""
    locality_ratio: float = 10.0
    """The selectivity that ``"ratio"`` and ``"perturb"`` require; unused by ``"exact"`` and ``"readout"``."""
    ablation_moved_share: float = 0.9
    """Share of the non-zero inputs that use a mechanism on which removing it must move the output by more
    than 1e-3 of the output scale. Lower where a small input stays under a ReLU threshold (TMS: a small x_c
    stays under output c's negative bias; resid MLPs: a negative x_i mostly leaves the ReLU off)."""
    activation_rate: float | None = None
    """P(a mechanism that is not always-on is active on one input from ``sample``): p for independent
    features, p / (1 - (1 - p)^units) when all-zero inputs are redrawn. None: not stated, so not checked
    (every built-in toy states it)."""
    drops_zero_inputs: bool = False
    """True where ``sample`` redraws every all-zero input (L3D's generator, docs/reference/l3d.md 2)."""

    def __init__(self) -> None:
        self._model: nn.Module | None = None
        self._gt: GroundTruth | None = None
        self.build_info: BuildInfo | None = None

    # -- what a subclass provides -----------------------------------------------------------------
    @abstractmethod
    def make_model(self) -> nn.Module:
        """The architecture with placeholder weights."""

    @abstractmethod
    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        """Set the weights in place (train from ``seed`` or build by hand); return training facts."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` inputs from the training distribution (CPU)."""

    @abstractmethod
    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        """The ground-truth mechanisms of the built ``model``."""

    @abstractmethod
    def active(self, inputs: Tensor) -> Tensor:
        """bool ``[batch, M]``: which mechanisms each input uses (order of ``mechanisms``)."""

    @abstractmethod
    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        """The weight matrices' uses in the forward pass, with the activations each reads."""

    def loss(self, output: Tensor, inputs: Tensor) -> Tensor:
        """The training loss; by default MSE to the inputs (autoencoding)."""
        return ((output - inputs) ** 2).mean()

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        """None when every mechanism is alive after training, else the reason it is not."""
        return None

    # -- provided -----------------------------------------------------------------------------------
    @property
    def cache_key(self) -> str:
        return f"{self.spec.name}-v{self.spec.version}-seed{self.spec.seed}"

    def shipped_weights_path(self) -> Path | None:
        """Where this toy model's shipped weights lie, if it ships any: ``weights/<cache_key>.safetensors``
        beside the module that defines its class (written with :func:`benchmark.cache.write_shipped`); None
        for a class without a file (defined in a notebook or a REPL), which ships nothing."""
        try:
            module_file = inspect.getfile(type(self))
        except (OSError, TypeError):
            return None
        return Path(module_file).parent / "weights" / f"{self.cache_key}.safetensors"

    def _shipped_file(self) -> Path | None:
        path = self.shipped_weights_path()
        return path if path is not None and path.exists() else None

    def stored_meta(self, cache: WeightCache | None = None) -> dict[str, Any] | None:
        """The build metadata of the weights ``build`` would load (shipped ones, marked ``shipped``, else the
        cached ones), without building; None when there are none."""
        if (path := self._shipped_file()) is not None:
            return dict(read_shipped(path)[1], shipped=True)
        return (cache or WeightCache()).read_meta(self.cache_key)

    def build(self, cache: WeightCache | None = None, shipped: bool = True) -> ToyModel:
        """Load the shipped weights (unless ``shipped`` is False) or the cached ones, or fit them (retrying
        unhealthy seeds) and cache them."""
        cache = cache or WeightCache()
        model = self.make_model()
        t0 = time.perf_counter()
        path = self._shipped_file() if shipped else None
        cached = read_shipped(path) if path is not None else cache.load(self.cache_key)
        if cached is not None:
            state, meta = cached
            model.load_state_dict(state)
            info = BuildInfo(
                meta["weights_sha256"], meta["train_seed"], time.perf_counter() - t0, True, meta.get("extra", {})
            )
        else:
            failures = []
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # multi-threaded reductions sum in another order: same seed, other weights
            try:
                for attempt in range(self.max_health_retries):
                    seed = self.spec.seed + attempt
                    model = self.make_model()
                    extra = self.fit(model, seed)
                    problem = self.health(model, extra)
                    if problem is None:
                        break
                    failures.append(f"seed {seed}: {problem}")
                else:
                    raise RuntimeError(
                        f"toy model {self.spec.name}: no healthy model in {self.max_health_retries} seeds: {failures}"
                    )
            finally:
                torch.set_num_threads(threads)
            extra = dict(extra, rejected_seeds=failures, train_seconds=time.perf_counter() - t0)
            meta = cache.save(
                self.cache_key, model.state_dict(), {"train_seed": seed, "extra": extra, "spec": self.spec.to_dict()}
            )
            info = BuildInfo(meta["weights_sha256"], seed, time.perf_counter() - t0, False, extra)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        self._model, self.build_info = model, info
        self._gt = GroundTruth(self.mechanisms(model), self.active)
        return self

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError(f"toy model {self.spec.name} is not built: call build() first")
        return self._model

    @property
    def ground_truth(self) -> GroundTruth:
        if self._gt is None:
            raise RuntimeError(f"toy model {self.spec.name} is not built: call build() first")
        return self._gt

    def drop_ground_truth(self) -> None:
        """Forget the built ground truth (the worker does so before a method that may not see it runs)."""
        self._gt = None

    def param_shapes(self) -> dict[str, torch.Size]:
        named = dict(self.model.named_parameters())
        return {n: named[n].shape for n in self.spec.decomposed}

    def weights_sha256(self) -> str:
        return weights_sha256(self.model.state_dict())

    def target(self, with_ground_truth: bool = False) -> Target:
        """A fresh copy of the network for a method to work on."""
        import copy

        model = copy.deepcopy(self.model)
        return Target(
            spec=self.spec,
            model=model,
            sample=self.sample,
            loss=self.loss,
            sites=lambda x, m=model: self.sites(m, x),
            ground_truth=self.ground_truth if with_ground_truth else None,
        )


def load_toy(name: str, cache: WeightCache | None = None, **kwargs: Any) -> ToyModel:
    """Build the registered toy model ``name`` (a registry name or ``module:factory``)."""
    toy = TOY_MODELS.get(name)(**kwargs)
    if not isinstance(toy, ToyModel):
        raise TypeError(f"toy model factory {name!r} returned {type(toy).__name__}, not a ToyModel")
    return toy.build(cache)


def _toy_kind(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"{obj!r} is not a ToyModel class or factory")


TOY_MODELS.check = _toy_kind
