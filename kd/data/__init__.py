"""Data in: where reviews come from, their labels, the prepared splits, augmentation."""
