"""Integer export: the artifact (integer tensors + versioned spec), calibration, the NumPy
reference simulator (golden model), and the ONNX writer. See docs/spec.md."""
