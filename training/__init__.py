"""Training scripts: build vocabulary, extract features, train, evaluate (``python -m training.<name>``)."""
