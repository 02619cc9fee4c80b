"""Bench: measure the classifier and the whole worker against a baseline run in the same process.

`command` parses the arguments and prints the summary line; `model_mode` times our classifier
against transformers' pipeline on the same texts; `e2e_mode` runs real worker processes on a
real broker and database; `texts` makes IMDB-like synthetic reviews or reads a file of texts.
"""
