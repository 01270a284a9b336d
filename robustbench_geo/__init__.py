"""robustbench_geo: geometric adversarial robustness for image and graph models."""

__version__ = "0.1.0"
