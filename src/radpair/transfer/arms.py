"""Arms of a transfer comparison: where an encoder starts, and how it is adapted.

An arm is a *start* (a weights file, another dataset's supervised model, or the built-in
random initialisation) crossed with a *protocol* (``linear``, ``frozen-head``,
``finetune``), independent of how the start was pretrained. Keeping the two apart is what
makes the papers' tables comparable: RadTex's "frozen" and "unfrozen" rows, ConVIRT's
linear and fine-tune columns and TIMNet's "Ours" and "Base" are all start × protocol, and
"trained from scratch" is simply random × finetune.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from radpair.errors import ConfigError, unknown_choice_message

RANDOM = "random"


class Protocol(str, Enum):
    LINEAR = "linear"  # L2 logistic / multinomial regression on frozen pooled features
    FROZEN_HEAD = "frozen-head"  # frozen backbone (BatchNorm in eval mode), a trained head
    FINETUNE = "finetune"  # everything trained, separate learning rates for encoder and head

    @classmethod
    def parse(cls, value: str | "Protocol") -> "Protocol":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip())
        except ValueError:
            raise ConfigError(unknown_choice_message("transfer protocol", str(value), [p.value for p in cls])) from None


def parse_protocols(text: str | list[str]) -> list[Protocol]:
    items = [p for p in (text.split(",") if isinstance(text, str) else text) if str(p).strip()]
    if not items:
        raise ConfigError("no transfer protocol given (--protocol linear,frozen-head,finetune)")
    return list(dict.fromkeys(Protocol.parse(p) for p in items))


@dataclass(frozen=True)
class Start:
    """Initial weights of the image encoder: a safetensors file, or ``random`` init of ``arch``."""

    name: str
    weights: str | None = None
    arch: str = "resnet_tiny"

    @property
    def is_random(self) -> bool:
        return self.weights is None

    @classmethod
    def parse(cls, spec: str, arch: str = "resnet_tiny") -> "Start":
        """``random``, ``FILE`` or ``NAME=FILE`` (the name labels the arm in tables)."""
        spec = str(spec).strip()
        if spec == RANDOM:
            return cls(RANDOM, None, arch)
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        if not path:
            raise ConfigError(f"--encoder {spec!r}: expected random, FILE or NAME=FILE")
        p = Path(path)
        if not name:
            name = p.parent.name if p.stem == "image_encoder" and p.parent.name else p.stem
        if name == RANDOM:
            raise ConfigError(f"--encoder {spec!r}: the name 'random' is reserved for random initialisation")
        return cls(name, str(p), arch)

    def to_dict(self) -> dict:
        return {"name": self.name, "weights": self.weights, "arch": self.arch}


NAMED_ARMS = {
    (RANDOM, Protocol.FINETUNE): "from scratch",
    (RANDOM, Protocol.LINEAR): "random-feature floor",
    (RANDOM, Protocol.FROZEN_HEAD): "random-feature floor (head)",
}


@dataclass(frozen=True)
class Arm:
    start: Start
    protocol: Protocol

    @property
    def key(self) -> str:
        """Stable identifier, used in results.json and file names: ``convirt:linear``."""
        return f"{self.start.name}:{self.protocol.value}"

    @property
    def label(self) -> str:
        """What a table prints: ``convirt × linear``, ``random × finetune (from scratch)``."""
        text = f"{self.start.name} × {self.protocol.value}"
        alias = NAMED_ARMS.get((self.start.name if self.start.is_random else "", self.protocol))
        return f"{text} ({alias})" if alias else text

    @property
    def dir_name(self) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.key.replace(":", "__"))

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "start": self.start.to_dict(), "protocol": self.protocol.value}


def cross_arms(starts: list[Start], protocols: list[Protocol]) -> list[Arm]:
    names = [s.name for s in starts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"encoder names must be unique; {dup} given twice (use NAME=FILE)")
    return [Arm(s, p) for s in starts for p in protocols]


def parse_arm(spec: str, starts: dict[str, Start]) -> Arm:
    """``START:PROTOCOL`` with START one of ``starts`` (for explicit arm lists)."""
    name, sep, proto = str(spec).rpartition(":")
    if not sep or name not in starts:
        raise ConfigError(unknown_choice_message("arm start", name or spec, starts) + f" in arm {spec!r}")
    return Arm(starts[name], Protocol.parse(proto))


__all__ = ["Arm", "Protocol", "Start", "RANDOM", "cross_arms", "parse_arm", "parse_protocols"]
