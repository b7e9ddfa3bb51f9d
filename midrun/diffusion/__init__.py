"""Diffusion runtime: model schedules, sigma schedulers, step noise, resumable samplers,
model loading and previews. The only torch-heavy layer; nothing above it imports torch."""
