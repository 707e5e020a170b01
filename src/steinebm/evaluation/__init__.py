"""Evaluation: log-likelihood (exact and AIS), the classifiers behind the inception score, FID, and
the accuracy of a classifier trained on generated images."""
