"""An encoder's spec: its name, weights and preprocessing, stored in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EncoderSpec"]


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild an encoder and preprocess images exactly as in training.

    ``resize_size`` None means a plain (aspect-squashing) resize to ``image_size``;
    otherwise resize the short side to ``resize_size`` then centre-crop ``image_size``.
    """

    name: str
    weights: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_size: int | None = None

    @property
    def decode_size(self) -> int:
        """The fewest pixels per side the preprocessing needs (``load_image``'s ``min_size``)."""
        return self.resize_size or self.image_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        data = dict(data)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)
