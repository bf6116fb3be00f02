"""Trainers: the section-aware KD config/trainer pair and the CoT-ICL meta-training pieces."""

from hf_cot_distill.trainers.kd_config import KD_MODES, SectionKDConfig
from hf_cot_distill.trainers.kd_trainer import SectionKDTrainer

__all__ = ["KD_MODES", "SectionKDConfig", "SectionKDTrainer"]
