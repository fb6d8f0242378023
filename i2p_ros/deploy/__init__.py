"""Deployment: ONNX export, and ONNX Runtime / TensorRT runners for the segmentation pipeline.

* ``i2p-export`` (:mod:`.export`): checkpoint -> ONNX graph (gather strategy, BatchNorm folded by
  :mod:`.fold`, neighbour tables as inputs, dynamic voxel counts) with the metadata a runner needs
  (:mod:`.metadata`).
* :mod:`.tables`: the recipe that rebuilds a graph's neighbour tables for each scan with the PyTorch engine.
* :mod:`.ort_backend` / :mod:`.trt_backend`: runners that plug into ``SegmentationPipeline(network=...)``
  (shared plumbing in :mod:`.runtime`) and register the node backends ``onnxruntime`` and ``tensorrt``.

Importing this package loads neither onnx, onnxruntime nor tensorrt; the submodules do on use.
"""
