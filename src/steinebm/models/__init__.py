"""Models: the energies (the Gaussian-Bernoulli RBM, the autoencoder and joint image-label energies)
and the generators and discriminators (MNIST and DCGAN-style)."""
