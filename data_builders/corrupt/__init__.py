"""Corruptions that turn a clean input into the degraded one a preference pair contrasts it with.

- `image.py`: image-side negatives (mDPO's crop, STIC's downscale and colour jitter, POVID's and BPO's diffusion
  noise, plain Gaussian noise, blur), as seeded tensor functions plus the `apply_corruption` call builders use.

Nothing is imported here, so `import data_builders.corrupt.<module>` pulls in only what that module needs.
"""
