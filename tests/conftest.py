"""Shared settings for the ce_lib tests: a quick Hypothesis profile and the devices to test on."""

import torch
from hypothesis import settings

# The whole suite has to run in well under 30 s on two cores: few examples, no deadline
# (the first call of a torch op can be slow).
settings.register_profile("ce_lib", deadline=None, max_examples=30, derandomize=True, database=None)
settings.load_profile("ce_lib")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
