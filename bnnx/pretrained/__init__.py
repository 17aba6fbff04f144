"""Pretrained weights from other frameworks, mapped onto bnnx's models (numpy only)."""
