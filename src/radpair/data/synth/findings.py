"""What is wrong with one study: the ground truth every other module reads.

Kept apart from sampling (``cohort``), drawing (``render``) and writing (``reports``) so
that tests and users can build a study by hand, e.g. the same patient with and without
an effusion, and render or describe exactly that.

Sides are the *patient's* sides. On a frontal image displayed the usual way (as if
facing the patient) the patient's right is on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

FINDINGS: tuple[str, ...] = (
    "edema",
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "atelectasis",
    "nodule",
)
SIDES = ("right", "left", "bilateral")
SIZES = ("small", "moderate", "large")
LOBES = ("RUL", "RML", "RLL", "LUL", "lingula", "LLL")
LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "lingula": "left", "LLL": "left"}
ATELECTASIS_KINDS = ("plate_right", "plate_left", "bibasilar", "lobar_RUL", "lobar_RLL", "lobar_LLL")
DEVICES = ("ett", "ng", "cvc_rij", "cvc_lsc", "picc", "pacemaker", "chest_tube_right", "chest_tube_left")
VIEWS = ("PA", "AP", "LATERAL")
CTR_LIMIT = 0.5  # cardiothoracic ratio above which the heart is called enlarged


def side_sign(side: str) -> float:
    """x direction (image coordinates) of a patient side: right lung on the image left."""
    return -1.0 if side == "right" else 1.0


def sides_of(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else ((side,) if side else ())


@dataclass(frozen=True)
class Nodule:
    """A round opacity placed in lung-local coordinates so it stays inside any lung shape.

    ``lateral`` in [-1, 1] runs medial -> lateral across the lung, ``vertical`` in [-1, 1]
    apex -> base; ``diameter_mm`` sets the radius (1 normalised unit ~ 150 mm).
    """

    side: str
    lateral: float
    vertical: float
    diameter_mm: float


@dataclass(frozen=True)
class Findings:
    """Ground truth of one study; every image of the study shows the same findings."""

    edema_severity: int = 0
    ctr: float = 0.45
    effusion_side: str = ""
    effusion_size: str = ""
    pneumothorax_side: str = ""
    pneumothorax_size: str = ""
    consolidation_lobe: str = ""
    consolidation_pattern: str = ""  # "lobar" | "patchy"
    atelectasis_kind: str = ""
    nodule: Nodule | None = None
    devices: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.edema_severity not in (0, 1, 2, 3):
            raise ValueError(f"edema_severity must be 0-3, got {self.edema_severity}")
        if bool(self.effusion_side) != bool(self.effusion_size):
            raise ValueError("effusion_side and effusion_size must be set together")
        if self.effusion_side and (self.effusion_side not in SIDES or self.effusion_size not in SIZES):
            raise ValueError(f"bad effusion {self.effusion_side!r}/{self.effusion_size!r}")
        if self.pneumothorax_side and (self.pneumothorax_side not in ("right", "left")
                                       or self.pneumothorax_size not in SIZES):
            raise ValueError(f"bad pneumothorax {self.pneumothorax_side!r}/{self.pneumothorax_size!r}")
        if self.consolidation_lobe and self.consolidation_lobe not in LOBES:
            raise ValueError(f"unknown lobe {self.consolidation_lobe!r} (valid: {LOBES})")
        if self.atelectasis_kind and self.atelectasis_kind not in ATELECTASIS_KINDS:
            raise ValueError(f"unknown atelectasis kind {self.atelectasis_kind!r} (valid: {ATELECTASIS_KINDS})")
        bad = [d for d in self.devices if d not in DEVICES]
        if bad:
            raise ValueError(f"unknown devices {bad} (valid: {DEVICES})")

    # binary labels -----------------------------------------------------------------
    @property
    def edema(self) -> int:
        return int(self.edema_severity > 0)

    @property
    def cardiomegaly(self) -> int:
        return int(self.ctr > CTR_LIMIT)

    @property
    def pleural_effusion(self) -> int:
        return int(bool(self.effusion_side))

    @property
    def pneumothorax(self) -> int:
        return int(bool(self.pneumothorax_side))

    @property
    def consolidation(self) -> int:
        return int(bool(self.consolidation_lobe))

    @property
    def atelectasis(self) -> int:
        return int(bool(self.atelectasis_kind))

    @property
    def has_nodule(self) -> int:
        return int(self.nodule is not None)

    @property
    def support_devices(self) -> int:
        return int(bool(self.devices))

    def labels(self) -> dict[str, int]:
        """0/1 per entry of :data:`FINDINGS`."""
        return {
            "edema": self.edema,
            "cardiomegaly": self.cardiomegaly,
            "pleural_effusion": self.pleural_effusion,
            "pneumothorax": self.pneumothorax,
            "consolidation": self.consolidation,
            "atelectasis": self.atelectasis,
            "nodule": self.has_nodule,
        }

    @property
    def is_normal(self) -> bool:
        return not any(self.labels().values())

    @property
    def cardiomegaly_grade(self) -> str:
        """'' for a normal heart, else mild / moderate / severe from the CTR."""
        if self.ctr <= CTR_LIMIT:
            return ""
        return "mild" if self.ctr < 0.56 else ("moderate" if self.ctr < 0.63 else "severe")

    def with_(self, **changes) -> "Findings":
        """A copy with some fields changed (for building controlled comparisons)."""
        return replace(self, **changes)


NORMAL = Findings()

__all__ = ["FINDINGS", "Findings", "Nodule", "NORMAL", "SIDES", "SIZES", "LOBES", "LOBE_SIDE", "ATELECTASIS_KINDS",
           "DEVICES", "VIEWS", "CTR_LIMIT", "side_sign", "sides_of"]
