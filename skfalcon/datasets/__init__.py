r"""Built-in simulators with reference posteriors.

Six standard simulation-based inference tasks, used by the quickstart, the tests and
the benchmarks. Each task object draws parameters from its prior, runs the simulator,
evaluates the exact likelihood and draws reference samples from the posterior of an
observation, so that an estimator can be scored against the truth (for instance with
:func:`skfalcon.metrics.c2st`). The references of :class:`TwoMoons`,
:class:`GaussianLinear` and :class:`GaussianMixture` are exact; those of :class:`SLCP`,
:class:`SLCPDistractors` and :class:`BernoulliGLM` are drawn by MCMC (the ``references``
extra, ``emcee``), validated against importance sampling with the exact likelihood (each
class says how, with its figures), and cached on disk: in ``$SKFALCON_CACHE``, else
``~/.cache/skfalcon/references``, one file per task, observation, sample count and seed.

**Two moons.** :math:`\theta \sim \mathcal{U}([-1, 1]^2)`,
:math:`a \sim \mathcal{U}(-\pi/2, \pi/2)`, :math:`r \sim \mathcal{N}(0.1, 0.01^2)`,
:math:`p = (r \cos a + 0.25,\ r \sin a)` and

.. math::

    x = p + f(\theta), \qquad
    f(\theta) = \Big(-\frac{|\theta_1 + \theta_2|}{\sqrt 2},\
                     \frac{-\theta_1 + \theta_2}{\sqrt 2}\Big).

On each half-plane :math:`\pm(\theta_1 + \theta_2) > 0` the map :math:`f` is
linear with :math:`|\det J_f| = 1`, and the prior is flat, so the posterior
is :math:`p(\theta \mid x) \propto p_{\text{noise}}(x - f(\theta))` on the box.
Exact samples follow by drawing :math:`p` from the noise, setting
:math:`z = x - p`, picking a branch :math:`s = \pm 1` with probability 1/2,
solving :math:`\theta_1 + \theta_2 = -s \sqrt 2 z_1`,
:math:`\theta_2 - \theta_1 = \sqrt 2 z_2` (possible only when
:math:`z_1 \le 0`) and keeping the solutions that fall in the box.

The noise density itself is exact: with :math:`q = p - (0.25, 0)`, the polar
map :math:`(a, r) \mapsto q` is a bijection from
:math:`(-\pi/2, \pi/2) \times (\mathbb{R} \setminus \{0\})` onto the plane
without the axis :math:`q_1 = 0` (negative :math:`r` lands on :math:`q_1 < 0`),
with Jacobian :math:`|r|`, hence
:math:`p(q) = \frac{1}{\pi}\, \mathcal{N}(\operatorname{sign}(q_1) \lVert q \rVert;
0.1, 0.01^2) / \lVert q \rVert`.

**Gaussian linear.** :math:`\theta \sim \mathcal{N}(0, \sigma_0^2 I_d)`,
:math:`x \sim \mathcal{N}(\theta, \sigma^2 I_d)`; the posterior is
:math:`\mathcal{N}\big(\tfrac{\sigma_0^2}{\sigma_0^2 + \sigma^2} x,\
\tfrac{\sigma_0^2 \sigma^2}{\sigma_0^2 + \sigma^2} I_d\big)`.

**SLCP.** :math:`\theta \sim \mathcal{U}([-3, 3]^5)`; with :math:`m = (\theta_1, \theta_2)`,
:math:`s_1 = \theta_3^2`, :math:`s_2 = \theta_4^2`, :math:`\rho = \tanh\theta_5`, the
observation is four independent draws of

.. math::

    \mathcal{N}\Big(m,\ \begin{pmatrix} s_1^2 & \rho s_1 s_2 \\
    \rho s_1 s_2 & s_2^2 \end{pmatrix}\Big),

flattened to 8 features :math:`(x_{11}, x_{12}, x_{21}, \dots, x_{42})`. The likelihood
depends on :math:`\theta_3` and :math:`\theta_4` only through their squares, so the
posterior is symmetric under each of their sign flips: four mirrored modes. The reference
samples the orthant :math:`\theta_3, \theta_4 > 0` by MCMC and flips each sign with
probability one half.

**Gaussian mixture.** :math:`\theta \sim \mathcal{U}([-10, 10]^2)` and
:math:`x \sim \tfrac12 \mathcal{N}(\theta, I) + \tfrac12 \mathcal{N}(\theta, 0.01 I)`.
The likelihood is symmetric in :math:`x - \theta` and the prior flat, so the posterior is
the same mixture centred at :math:`x`, truncated to the box:

.. math::

    p(\theta \mid x) = \frac{1}{Z(x)} \sum_{k=1}^{2} \tfrac12\,
        \mathcal{N}(\theta; x, \sigma_k^2 I)\, \mathbb{1}[\theta \in B], \qquad
    Z(x) = \sum_k \tfrac12 \prod_{i=1}^{2}
        \Big[\Phi\Big(\frac{10 - x_i}{\sigma_k}\Big) - \Phi\Big(\frac{-10 - x_i}{\sigma_k}\Big)\Big],

with :math:`\sigma_1 = 1`, :math:`\sigma_2 = 0.1`. Exact samples: component :math:`k` with
probability proportional to its term of :math:`Z(x)`, then each coordinate from its normal
truncated to :math:`[-10, 10]`.

**Bernoulli GLM.** A white-noise stimulus :math:`I_t \sim \mathcal{N}(0, 1)`, :math:`t = 0, \dots, 99`,
drawn once with seed 42, gives the design matrix :math:`X` of shape ``(100, 10)``: a
column of ones (the bias) and the stimulus delayed by 0 to 8 bins (zero before it
starts). With :math:`\theta = (\beta, h_1, \dots, h_9)`, each bin spikes independently,
:math:`y_t \sim \text{Bernoulli}(\sigma(X_t \theta))`, and the observation is the
sufficient statistic :math:`x = X^\top y` (the spike count, then the stimulus summed
over the spikes at each delay). Hence

.. math::

    \log p(y \mid \theta) = \theta^\top x - \sum_t \log\big(1 + e^{X_t \theta}\big),

and since the stimulus is continuous, distinct spike trains give distinct :math:`x`
(almost surely), so :math:`p(x \mid \theta) = p(y \mid \theta)` for every :math:`x` the
simulator produces: the likelihood is log-concave. The prior is Gaussian, zero-mean, with
the bias independent, :math:`\beta \sim \mathcal{N}(0, 2)`, and the filter's precision
:math:`F^\top F`, :math:`F = D^2 + \operatorname{diag}(\sqrt{j / 9})_{j=0..8}` with
:math:`D` the first-difference matrix (ones on the diagonal, minus ones below): it favours
smooth filters.
"""

from skfalcon.datasets._bernoulli_glm import BernoulliGLM
from skfalcon.datasets._gaussian_linear import GaussianLinear, make_gaussian_linear
from skfalcon.datasets._gaussian_mixture import GaussianMixture
from skfalcon.datasets._slcp import SLCP, SLCPDistractors
from skfalcon.datasets._two_moons import TwoMoons, make_two_moons

__all__ = [
    "TwoMoons",
    "GaussianLinear",
    "SLCP",
    "GaussianMixture",
    "BernoulliGLM",
    "SLCPDistractors",
    "make_two_moons",
    "make_gaussian_linear",
]
