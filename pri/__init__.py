"""pri: data-free model inversion of Vision Transformers (DMI, SMI, Patch Rebirth Inversion)."""
__version__ = "0.1.0"
