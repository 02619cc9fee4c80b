"""Model: everything that touches torch and transformers, behind `SentimentClassifier`.

`loading` finds and loads a checkpoint (a Hugging Face id or a local directory) on a device,
`encoding` tokenizes and plans forward passes by a token budget, `classifier` runs them and maps
the model's labels (`labels`) onto positive/negative, with the temperature from `calibration`
(plain Python, so the operator tools read and write it without torch). Nothing outside this
package imports torch.
"""
