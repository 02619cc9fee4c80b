"""Learning: fine-tune on reviewers' verdicts, adapt to unlabelled feedback, compare a shadow candidate."""
