"""Export of trained models to ONNX bundles, quantization and TensorRT engines."""
