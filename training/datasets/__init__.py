"""Readers for the real dataset layouts (NTU RGB+D 60/120, PKU-MMD phase 1), used unchanged
for the synthetic data gd-synth writes in the same layouts. numpy + OpenCV only, no torch."""

from training.datasets.errors import DatasetFormatError
from training.datasets.ntu import NTUDataset, NTUSample
from training.datasets.pku import PKUMMDDataset, PKUVideo

__all__ = ["DatasetFormatError", "NTUDataset", "NTUSample", "PKUMMDDataset", "PKUVideo"]
