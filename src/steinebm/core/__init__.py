"""Core maths: kernels, SVGD's direction phi and its particle sampler, Langevin dynamics, and the
collectives that let several processes compute one phi."""
