"""Running what bnnx trains outside bnnx: a C99 program (`c_export`) and a QONNX graph (`qonnx_export`)."""
