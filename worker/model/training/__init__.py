"""Training: fine-tune a classifier on labelled feedback, and adapt its encoder to unlabelled feedback."""
