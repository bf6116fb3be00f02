"""hf_cot_distill: chain-of-thought learning and distillation for the Hugging Face ecosystem."""

from hf_cot_distill.core.sections import Section

__version__ = "0.1.0.dev0"

__all__ = ["Section", "__version__"]
