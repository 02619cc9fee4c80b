"""Model: everything that touches torch, transformers and ONNX Runtime, behind `answering.Classifier`.

`loading` finds and loads a checkpoint (a Hugging Face id or a local directory) on a device,
`encoding` tokenizes and plans forward passes by a token budget, `answering` turns the passes'
logits into answers, mapping the model's labels (`labels`) onto positive/negative with the
temperature from `calibration`. `classifier` runs the passes of a model loaded through transformers;
`onnx_serving` runs a cached ONNX graph without importing torch or transformers (`onnx_cache`
holds what it needs, `onnx_engine` writes it). `answering`, `encoding`, `planning`, `calibration`,
`labels`, `identity`, `category_card`, `errors`, `onnx_cache` and `onnx_serving` import no torch.
Nothing outside this package imports torch.
"""
