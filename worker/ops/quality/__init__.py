"""Model quality on labelled data: `labelled` reads the files, `evaluate` runs the worker's classifier
over them, `measures` computes the figures, `fitting` and `calibrate` fit a temperature and a
threshold, `plot` draws the reliability diagram and confusion matrix.
"""
