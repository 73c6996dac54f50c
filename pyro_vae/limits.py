"""The ranges of the numbers a run takes, each with the reason for its bound.

A value outside its range either cannot be allocated or trains to garbage (an ELBO of
-1e32 nats, a likelihood that ignores the data), so it is refused: by the command line
where it parses the value (:mod:`pyro_vae.parsing`), and by the library where it meets it
(:meth:`pyro_vae.TrainConfig.check`, the model constructors, the likelihoods), with the
same bound and a :class:`~pyro_vae.errors.UsageError`. Infinity and NaN are never in
range. Sizes within their bounds may still not fit the machine: :mod:`pyro_vae.memory`
refuses a network before it is allocated when its parameters need more memory than is
free.
"""

from __future__ import annotations

import numbers

#: widths of hidden layers and latents, codebook sizes, code lengths and slots: a layer
#: between two widths of 2**20 holds 2**40 weights (4 TiB of float32), beyond any
#: machine, and larger integers overflow the 64-bit sizes of torch
MAX_WIDTH = 2**20
#: steps of an inverse autoregressive flow: each is a network of 16 z_dim^2 weights and
#: as many mask entries, built one after the other; Kingma et al. (2016) use a handful,
#: and 2**10 steps already make a guide slower than the rest of a step by far
MAX_FLOW_STEPS = 2**10
#: passes over the data: Burda et al.'s schedule takes 3,280 epochs; a million epochs of
#: the smallest data set take days, so a larger count is a typo
MAX_EPOCHS = 10**6
#: data points per batch (and per scoring batch): more than 2**24 images of even 8x8
#: pixels do not fit in memory as a batch of float32 activations of a 400-wide layer
MAX_BATCH_SIZE = 2**24
#: samples of z per data point per step: every particle runs the networks on the whole
#: batch; Burda et al. train with k up to 50 and evaluate with 5,000, and 2**16 particles
#: of a batch of 128 784-pixel images already hold 26 GB of likelihood parameters
MAX_PARTICLES = 2**16
#: Adam's step size: Adam moves every weight by about ``lr`` per step, whatever the
#: gradient's scale, so above 1 each step moves the weights further than their own
#: scale (about 1/sqrt(width)) and training diverges or saturates (1e-3 is usual)
MAX_LR = 1.0
#: the KL weight beta: beta-VAEs use up to a few hundred (Higgins et al. 2017); beyond
#: 1,000 the KL term swamps the reconstruction and every code collapses to the prior
MAX_BETA = 1e3
#: epochs of KL warm-up: a warm-up longer than the most epochs a run can take
#: (:data:`MAX_EPOCHS`) never ends, and its first weight underflows to zero
MAX_KL_WARMUP = float(MAX_EPOCHS)
#: a fixed scale of the gaussian (sigma) or laplace likelihood, for pixels in [0, 1]:
#: below 1e-4 a unit error costs 5e7 nats per pixel, and float32 losses overflow or
#: diverge; above 1e4 the reconstruction term is below 1e-8 nats per pixel, so the
#: likelihood ignores the data and the model is its prior
MIN_SIGMA, MAX_SIGMA = 1e-4, 1e4
#: the weight of the VQ-VAE's commitment term (and of its codebook term):
#: van den Oord et al. (2017) use 0.25 and find 0.1 to 2 alike; beyond 1,000 the
#: encoder outputs are pinned to their codes and the reconstruction no longer trains them
MAX_COMMITMENT = 1e3
#: the weight of the ssvae's classification term per labelled image: Kingma et al.'s
#: 0.1 N over 100 labels of MNIST is 50, Pyro's example uses 46; beyond 10,000 one
#: labelled image outweighs the likelihood of the whole data set it sits in
MAX_ALPHA = 1e4


def in_range(value: float, low: float, high: float, *, open_low: bool = False) -> bool:
    """Whether ``value`` is a finite number in ``[low, high]`` (``(low, high]`` with
    ``open_low``); NaN and infinity never are."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    above = value > low if open_low else value >= low
    return above and value <= high  # False for NaN; infinity exceeds every bound
