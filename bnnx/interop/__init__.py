"""Interoperability with other BNN frameworks: larq/Keras model import, LCE flatbuffer export."""
