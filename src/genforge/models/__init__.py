"""Networks: GAN generators/discriminators, VQ-VAE encoder/decoder/quantizers, priors."""
