"""A run folder and its one owner.

``pyro-vae train`` writes a run folder; every other command, the experiments and your
own code read it back through :func:`open_run`, which returns the trained model, the data
it was trained on and its configuration. :class:`RunConfig` (data, model, training) is
the single source of ``config.json`` and of the configuration inside the checkpoint;
:class:`RunFolder` names every file a run holds and knows which of them go stale.

Folders written by pyro_vae 0.1 (no ``"format"`` in ``config.json``) open as they are:
their conditional task, which 0.1 kept with the data, moves into the model's settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pyro_vae import checkpoint as ckpt_io
from pyro_vae import data as data_mod
from pyro_vae import plugins, schema
from pyro_vae.devices import resolve_device
from pyro_vae.errors import UsageError
from pyro_vae.io import write_json
from pyro_vae.models import DEFAULT_KIND, Model, check_config, model_class
from pyro_vae.plots import TRAINING_FIGURES
from pyro_vae.train import History, TrainConfig, resumable
from pyro_vae.version import __version__

FORMAT = "pyro_vae.run/2"

__all__ = [
    "DataConfig",
    "OpenedRun",
    "RunConfig",
    "RunFolder",
    "build_model",
    "load_model",
    "open_run",
    "resolve_device",
    "resumable",
]


@dataclass
class DataConfig:
    """The data a run trains on: the ``data`` block of ``config.json``."""

    dataset: str = "mnist5k"  # a name of pyro_vae.data.DATASETS
    binarize: str = "none"  # none, static or dynamic
    dequantize: bool = False  # uniform dequantization of the grey levels
    #: where torchvision data sets live: it says where the files are, not what they
    #: hold, so a resumed or evaluated run may find them elsewhere
    data_dir: str = field(default="data", metadata={"resumable": True})

    def load(self) -> data_mod.Dataset:
        """The data set, on the CPU."""
        return data_mod.load(
            self.dataset,
            binarize=self.binarize,
            dequantize=self.dequantize,
            data_dir=self.data_dir,
        )


@dataclass
class RunConfig:
    """Everything that defines a run, as written to ``config.json`` and the checkpoint.

    :ivar data: which data, prepared how.
    :ivar model: the model's :meth:`~pyro_vae.models.base.Model.config` (its kind and
        constructor arguments).
    :ivar train: the optimization settings.
    :ivar plugins: where a model or likelihood from outside the package came from
        (:func:`pyro_vae.plugins.provenance`); imported again when the run is read.
    """

    data: DataConfig
    model: dict[str, Any]
    train: TrainConfig
    pyro_vae_version: str = __version__
    plugins: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.json`` and the checkpoint."""
        plugged = {"plugins": dict(self.plugins)} if self.plugins else {}
        return {
            "format": FORMAT,
            "pyro_vae_version": self.pyro_vae_version,
            **plugged,
            "data": asdict(self.data),
            "model": dict(self.model),
            "train": asdict(self.train),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "the run") -> RunConfig:
        """Inverse of :meth:`to_dict`; also reads the configurations of pyro_vae 0.1.

        Nothing is trusted: every field is checked against the type its dataclass or the
        model's constructor declares, and the values against their ranges.

        :param str source: where ``d`` was read, for messages.
        :raises UsageError: for a configuration that names no data set, settings this
            version does not know, a format newer than this version, or a field of the
            wrong type or out of range (naming ``source`` and the field).
        """
        if not isinstance(d, dict):
            raise UsageError(
                f"{source} holds {schema.described(d)}, not a run's configuration (an object "
                f"with data, model and train); {schema.REMEDY}"
            )
        fmt = d.get("format")
        if fmt not in (None, FORMAT):
            raise UsageError(
                f"{source} was written in format {fmt!r}, which this version of pyro_vae "
                f"({__version__}) cannot read; upgrade pyro_vae"
            )
        if "data" not in d or "model" not in d:
            raise UsageError(
                f"{source} records no data set or no model (a checkpoint of fit() called "
                "from Python); load it with pyro_vae.checkpoint and evaluate it from Python"
            )
        recorded = plugins.restore(d.get("plugins", {}), source, d["model"])  # registers them
        data = schema.mapping(d["data"], f"{source}: data")
        model = schema.mapping(d["model"], f"{source}: model")
        model.setdefault("kind", DEFAULT_KIND)  # the first runs recorded no kind
        task = data.pop("task", None)  # 0.1 kept the conditional task with the data
        if task is not None and "task" not in model:
            model["task"] = task
        check_config(model, f"{source}: model")
        version = d.get("pyro_vae_version", "0.1.0")
        schema.check_type(version, "str", f"{source}: pyro_vae_version")
        config = cls(
            data=schema.build(DataConfig, data, f"{source}: data", required=("dataset",)),
            model=model,
            train=TrainConfig.from_dict(d.get("train", {}), f"{source}: train"),
            pyro_vae_version=version,
            plugins=recorded,
        )
        config.check(source)
        return config

    def check(self, source: str = "the run") -> None:
        """Check the values of the data settings.

        :raises UsageError: naming ``source`` and the setting.
        """
        name = self.data.dataset
        if name not in data_mod.DATASETS[:-1] and not name.startswith("npz:"):
            raise UsageError(
                f"{source}: data.dataset {name!r} is not a data set of this version of "
                f"pyro_vae ({', '.join(data_mod.DATASETS)}); {schema.REMEDY}"
            )
        if self.data.binarize not in data_mod.BINARIZE_MODES:
            raise UsageError(
                f"{source}: data.binarize {self.data.binarize!r} is not one of "
                f"{', '.join(data_mod.BINARIZE_MODES)}; {schema.REMEDY}"
            )

    def settled(self) -> dict[str, Any]:
        """The settings a run's weights depend on, ``{"block.name": value}``: every one
        but the :func:`resumable` fields, which a resumed run may change."""
        out = {f"model.{k}": v for k, v in self.model.items()}
        for block, values in (("data", self.data), ("train", self.train)):
            kept = set(asdict(values)) - resumable(type(values))
            out |= {f"{block}.{k}": v for k, v in asdict(values).items() if k in kept}
        return out


def build_model(model: dict[str, Any], source: str) -> Model:
    """An untrained model from its stored configuration (``config.json``'s ``model``).

    :param str source: the file it was read from, for messages.
    :raises UsageError: for an unknown kind, or settings its constructor refuses.
    """
    check_config(model, f"{source}: model")
    cls = model_class(model.get("kind", DEFAULT_KIND), source)
    try:
        return cls.from_config(model)
    except UsageError as err:
        raise UsageError(f"{source}: model: {err}") from err
    except (TypeError, ValueError, RuntimeError) as err:
        raise UsageError(
            f"{source}: model: these settings do not build a {cls.kind} model ({err}); "
            + schema.REMEDY
        ) from err


class RunFolder:
    """The named paths of a run folder.

    :param folder: the run's folder.
    """

    #: what ``pyro-vae train --overwrite`` replaces: the files of an earlier run and of
    #: every command run on it (figures, evaluations, samples, completions); other
    #: files, a user's own notes or pictures, stay
    STALE = (
        "config.json",
        "checkpoint.pt",
        "history.json",
        "results.json",
        "results.md",
        "eval.json",
        "eval.md",
        "eval_*.json",
        "eval_*.md",
        "bounds.png",
        "bounds_*.png",
        "prior_samples_*.png",
        "completions_*.png",
        *TRAINING_FIGURES,
    )

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.config = self.folder / "config.json"
        self.checkpoint = self.folder / "checkpoint.pt"
        self.history = self.folder / "history.json"
        self.results_json = self.folder / "results.json"
        self.results_md = self.folder / "results.md"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.folder)!r})"

    def exists(self) -> bool:
        """Whether the folder holds a run (a checkpoint)."""
        return self.checkpoint.is_file()

    @property
    def inputs(self) -> tuple[Path, ...]:
        """The files ``pyro-vae train`` wrote that the other commands read: no command
        but ``train`` may write onto them."""
        return (self.config, self.checkpoint, self.history, self.results_json, self.results_md)

    def check_output(self, path: str | Path, suffix: str) -> Path:
        """``path`` as the output of a command run on this folder, refused where it would
        replace one of :attr:`inputs` or does not end in ``suffix``.

        :raises UsageError: naming the file it would replace, or the suffix it needs.
        """
        path = Path(path)
        if path.suffix.lower() != suffix:
            raise UsageError(
                f"{{out}} {path} writes a {suffix[1:].upper()} file, so its name must end in "
                f"{suffix}",
                settings=("out",),
            )
        target = path.resolve()
        for existing in self.inputs:
            if target == existing.resolve():
                raise UsageError(
                    f"{{out}} {path} is the run's own {existing.name}, which the command "
                    "would destroy; choose another name",
                    settings=("out",),
                )
        return path

    def figure(self, name: str) -> Path:
        """A figure of the run, ``loss.png`` say."""
        return self.folder / name

    def evaluation(self, split: str, limit: int | None) -> tuple[Path, Path, Path]:
        """``(eval.json, eval.md, bounds.png)`` of ``pyro-vae evaluate``; the training
        split and a subset get their own names, so they never replace a full report."""
        suffix = "" if split == "test" else f"_{split}"
        suffix += f"_n{limit}" if limit else ""
        return (
            self.folder / f"eval{suffix}.json",
            self.folder / f"eval{suffix}.md",
            self.folder / f"bounds{suffix}.png",
        )

    def prior_samples(self, num_samples: int) -> Path:
        """The default picture of ``pyro-vae sample -n N``."""
        return self.folder / f"prior_samples_{num_samples}.png"

    def completions(self, split: str, num_samples: int | None) -> Path:
        """The default picture of ``pyro-vae complete``; ``num_samples`` is ``None`` for a
        model whose completion is one deterministic mean."""
        n = "" if num_samples is None else f"_n{num_samples}"
        return self.folder / f"completions_{split}{n}.png"

    def read_config(self) -> RunConfig:
        """The run's configuration: ``config.json``, checked against the copy inside the
        checkpoint, or the checkpoint's own where a folder has no ``config.json`` (one
        written by :func:`pyro_vae.fit` alone).

        :raises UsageError: for a file that cannot be read or used, or a ``config.json``
            that disagrees with the checkpoint on a setting the weights depend on.
        """
        state = None
        if self.checkpoint.is_file() or not self.config.is_file():
            state = self.read_checkpoint()
        return self.config_with(state)

    def read_checkpoint(self) -> dict[str, Any]:
        """The checkpoint (:func:`pyro_vae.checkpoint.load`), its training settings and
        history checked as well.

        :raises UsageError: naming the file and the field that cannot be used.
        """
        state = ckpt_io.load(self.checkpoint)
        TrainConfig.from_dict(state["config"]["train"], f"{self.checkpoint}: config.train")
        History.from_dict(state["history"], f"{self.checkpoint}: history")
        return state

    def config_with(self, state: dict[str, Any] | None) -> RunConfig:
        """:meth:`read_config` with the checkpoint already read (``None`` where the
        folder has none)."""
        if not self.config.is_file():
            return RunConfig.from_dict(state["config"], str(self.checkpoint))
        try:
            d = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UsageError(f"{self.config} is not readable JSON ({err})") from err
        config = RunConfig.from_dict(d, str(self.config))
        if state is not None:
            self._check_agreement(config, state["config"])
        return config

    def _check_agreement(self, config: RunConfig, stored: dict[str, Any]) -> None:
        """Refuse a ``config.json`` that differs from the checkpoint's copy in a setting
        the weights depend on; the :func:`resumable` ones may differ (a resumed run
        writes ``config.json`` before its first checkpoint)."""
        if "data" in stored:
            theirs = RunConfig.from_dict(stored, str(self.checkpoint)).settled()
            mine = config.settled()
        else:  # a checkpoint of fit() alone records the model, not the data
            model = {"kind": DEFAULT_KIND, **stored["model"]}
            theirs = {f"model.{k}": v for k, v in model.items()}
            mine = {k: v for k, v in config.settled().items() if k.startswith("model.")}
        absent = object()
        keys = sorted(set(mine) | set(theirs))
        differ = [k for k in keys if mine.get(k, absent) != theirs.get(k, absent)]
        if not differ:
            return
        shown = "; ".join(
            f"{k} is {_shown(mine, k)} in {self.config.name} but {_shown(theirs, k)} in "
            f"{self.checkpoint.name}"
            for k in differ[:3]
        ) + (f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
        raise UsageError(
            f"{self.config} and {self.checkpoint} disagree: {shown}. The weights were trained "
            f"with the checkpoint's settings: restore {self.config.name} (without one, the "
            "run reads the checkpoint's copy), or train a new run"
        )

    def source(self) -> str:
        """The file the run's configuration is read from, for messages."""
        return str(self.config if self.config.is_file() else self.checkpoint)

    def write_config(self, config: RunConfig) -> Path:
        """Write ``config.json`` atomically."""
        return write_json(self.config, config.to_dict())


class OpenedRun(NamedTuple):
    """What :func:`open` returns.

    :ivar model: the trained model, in eval mode, on the requested device.
    :ivar data: the data set it was trained on, on the same device.
    :ivar config: the run's :class:`RunConfig`.
    :ivar folder: the run's :class:`RunFolder`.
    """

    model: Model
    data: data_mod.Dataset
    config: RunConfig
    folder: RunFolder


def _shown(settings: dict[str, Any], key: str) -> str:
    return repr(settings[key]) if key in settings else "absent"


def _trained(model_config: dict[str, Any], folder: RunFolder, device, state) -> Model:
    model = build_model(model_config, folder.source())
    ckpt_io.load_model_state(model, state["model_state"], str(folder.checkpoint))
    return model.to(device).eval()


def _check_fits(model: Model, config: RunConfig, data: data_mod.Dataset, source: str) -> None:
    """Refuse a model that does not fit its data set (the data set changed, say)."""
    shape = config.model.get("image_shape")
    if shape is not None and data.image_shape is not None and list(shape) != list(data.image_shape):
        raise UsageError(
            f"{source}: model.image_shape {shape} does not fit the images of {data.name}, "
            f"which are {data.image_shape[0]}x{data.image_shape[1]}; {schema.REMEDY}"
        )
    try:
        model.check_data(*model.training_data(data).test, what=f"the test split of {data.name}")
    except UsageError as err:
        raise UsageError(
            f"{source}: the model does not fit its data: {err}; {schema.REMEDY}"
        ) from err


def _existing(path: str | Path) -> RunFolder:
    folder = RunFolder(path)
    if not folder.exists():
        raise UsageError(
            f"no run in {folder.folder} (no {folder.checkpoint.name}); train one "
            f"with `pyro-vae train --out {folder.folder}`"
        )
    return folder


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """The trained model in a run folder, without its data set; also reads a folder
    that holds only the checkpoint of :func:`pyro_vae.fit` (which records the model but
    no data set).

    :param path: a run folder, or a folder holding a ``checkpoint.pt``.
    :param device: where to put the model.
    :raises UsageError: if there is no readable checkpoint.
    """
    folder = _existing(path)
    device = resolve_device(device)
    state = folder.read_checkpoint()
    if folder.config.is_file() or "data" in state["config"]:
        model_config = folder.config_with(state).model
    else:
        model_config = dict(state["config"]["model"])
    return _trained(model_config, folder, device, state)


def open_run(path: str | Path, device: str | torch.device = "cpu") -> OpenedRun:
    """Open the run in folder ``path``: ``model, data, config, folder = open_run(path)``.

    :param path: a folder written by ``pyro-vae train``.
    :param device: where to put the model and the data.
    :raises UsageError: if the folder holds no run, or one this version cannot read.
    """
    folder = _existing(path)
    device = resolve_device(device)
    state = folder.read_checkpoint()
    config = folder.config_with(state)
    model = _trained(config.model, folder, device, state)
    data = config.data.load()
    _check_fits(model, config, data, folder.source())
    return OpenedRun(model, data.to(device), config, folder)
