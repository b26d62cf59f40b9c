"""The students: models, the registry that builds them, the training loop and its losses, the
training examples, inference."""
